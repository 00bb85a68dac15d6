"""quaestor across real distinct hosts: three network namespaces with a cluster of workers
each, etcd in a fourth, the balancer on host a (see conftest.py and docs/multihost.md)."""

import time

from conftest import HOSTS, figure
from support import wait_for


def test_the_balancer_on_a_offers_and_reaches_the_workers_of_b_and_c(multihost):
    offered = set(multihost.discover())
    for host in ("b", "c"):
        assert multihost.workers(host) <= offered, f"host {host}'s workers are not all offered: {offered}"
    # Real calls across the namespaces, from host a, to every worker the balancer names.
    for location in sorted(offered):
        assert multihost.health(location) == "SERVING", location
