"""A real nginx in front (examples/nginx/nginx.conf + prefork.upstream): nothing lost, upstream in step."""

from __future__ import annotations

import os

import pytest

from tests.prefork.test_upstream import NGINX
from tests.reliability import scenarios

pytestmark = [pytest.mark.reliability, pytest.mark.nginx,
              pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is installed by .ci/run")]


def test_nginx_in_front_through_ttin_ttou_and_20_reloads(processes) -> None:
    """prefork.upstream as shipped (NginxUpstream's default server options, as `prefork --upstream`)."""
    result = scenarios.nginx_front(processes, reloads=20)
    print(result.row())
    result.assert_ok()


def test_nginx_in_front_with_max_fails_0(processes) -> None:
    """The same with `server ... max_fails=0;` given explicitly (the default since docs/reliability.md's finding)."""
    result = scenarios.nginx_front(processes, reloads=20, server_options="max_fails=0")
    print(result.row())
    result.assert_ok()
