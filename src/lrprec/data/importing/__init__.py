"""The import machinery every importer shares (SPEC §6), one module per idea.

Every importer (:mod:`lrprec.data.amazon`, :mod:`lrprec.data.tables`) checks its inputs and
streams them once (:mod:`~lrprec.data.importing.lines`) into a
:class:`~lrprec.data.importing.builder.CatalogBuilder`, which keeps items and relations as
integer codes (not raw lines) and cleans text fields (:mod:`~lrprec.data.importing.text`);
every skipped input is counted in an :class:`~lrprec.data.importing.report.ImportReport`; finally
:func:`~lrprec.data.importing.assembly.assemble` filters, decodes images / copies features and
writes the catalog atomically with :func:`~lrprec.data.writer.write_catalog`, with what it kept of
each item's source in ``items_source.parquet`` (:mod:`~lrprec.data.importing.sources`).

Policy decisions (all counted in the report, none silent): duplicate item ids keep the first
row; items without a category get ``"unknown"``; relations with an endpoint that is not an
imported item are dropped, as are self-pairs and exact duplicates; text fields (title,
category) are cleaned by :func:`clean_text`, counted per field under ``cleaned``, with the raw
title and the image URL kept in ``items_source.parquet`` (:func:`read_item_sources`). Item ids
are never rewritten.

The names below are importable from here as well as from their modules.
"""
from lrprec.data.importing.assembly import FeatureRows, assemble, check_out
from lrprec.data.importing.builder import RELATION_ALIASES, UNKNOWN_CATEGORY, CatalogBuilder
from lrprec.data.importing.lines import MAX_LINE_BYTES, check_input, is_gzip, iter_lines
from lrprec.data.importing.report import (CLEANED_FIELDS, FEATURE_SKIPS, IMAGE_SKIPS, ITEM_SKIPS, PERSONAL_SKIPS, RELATION_SKIPS,
                                          ImportReport)
from lrprec.data.importing.sources import SOURCES_FILE, read_item_sources, write_item_sources
from lrprec.data.importing.text import clean_text

__all__ = [
    "CLEANED_FIELDS", "FEATURE_SKIPS", "IMAGE_SKIPS", "ITEM_SKIPS", "MAX_LINE_BYTES", "PERSONAL_SKIPS", "RELATION_ALIASES",
    "RELATION_SKIPS", "SOURCES_FILE", "UNKNOWN_CATEGORY", "CatalogBuilder", "FeatureRows", "ImportReport", "assemble",
    "check_input", "check_out", "clean_text", "is_gzip", "iter_lines", "read_item_sources", "write_item_sources",
]
