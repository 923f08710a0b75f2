"""A real nginx in front (examples/nginx/nginx.conf + prefork.upstream): nothing lost, upstream in step."""

from __future__ import annotations

import os

import pytest

from tests.prefork.test_upstream import NGINX
from tests.reliability import scenarios

pytestmark = [pytest.mark.reliability, pytest.mark.nginx,
              pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is installed by .ci/run")]


def test_nginx_in_front_through_ttin_ttou_and_20_reloads(processes) -> None:
    result = scenarios.nginx_front(processes, reloads=20)
    print(result.row())
    result.assert_ok()
