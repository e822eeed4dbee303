"""Runs the unmodified Airbyte Pendo source against a local base URL.

The connector is a declarative manifest whose `url_base` is hard-coded to the real API; this
loads the packaged manifest, rewrites that one value to `<base_url>/api/v1`, and launches the
source with the CDK exactly as the connector's own entry point does.
Usage: run_airbyte.py <base_url> <airbyte arguments...>
"""
import sys
from importlib import resources

import yaml
from airbyte_cdk.entrypoint import launch
from airbyte_cdk.sources.declarative.manifest_declarative_source import ManifestDeclarativeSource

base_url = sys.argv[1]
manifest = yaml.safe_load(resources.files("source_pendo").joinpath("manifest.yaml").read_text())
manifest["definitions"]["base_requester"]["url_base"] = base_url.rstrip("/") + "/api/v1"
launch(ManifestDeclarativeSource(source_config=manifest), sys.argv[2:])
