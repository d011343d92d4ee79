"""The HTML report of a run: every stage that left artifacts in the run directory gets a section."""
from lrprec.report.html import Section, write_report

__all__ = ["Section", "write_report"]
