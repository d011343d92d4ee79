"""Data layer: catalogs (items, relations, users, splits), generators and importers."""
from lrprec.data.catalog import RELATIONS, Catalog, CatalogError, Pairs
from lrprec.data.writer import write_catalog

__all__ = ["RELATIONS", "Catalog", "CatalogError", "Pairs", "write_catalog"]
