"""Which S3 endpoint and region strings are usable: checked where the options are read, before boto3 sees them."""

from __future__ import annotations

import re

from pokevq.errors import ConfigError

_ENDPOINT = re.compile(r"https?://[^\s/?#]+(/[^\s]*)?")
_REGION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")  # botocore's own check


def check_endpoint_and_region(endpoint_url: str | None, region: str | None) -> None:
    """One line naming the flag for an endpoint or region that botocore would refuse with a traceback."""
    if endpoint_url is not None and not _ENDPOINT.fullmatch(str(endpoint_url)):
        raise ConfigError(f"s3_endpoint_url (--s3-endpoint-url, else $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL) must "
                          f"be an http:// or https:// URL, e.g. http://127.0.0.1:9000; got {endpoint_url!r}")
    if region is not None and not _REGION.fullmatch(str(region)):
        raise ConfigError(f"s3_region (--s3-region, else $AWS_REGION) must be an AWS region such as us-east-1; got "
                          f"{region!r}")
