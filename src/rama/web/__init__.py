"""The feature dashboard: `create_app` serves a feature store (`rama serve`), `write_static_site`
writes the same pages as a self-contained folder of HTML files."""

from rama.web.app import create_app
from rama.web.static_site import write_static_site

__all__ = ["create_app", "write_static_site"]
