#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/seeds/TARGET/), committed: a handful of small
valid inputs per target, plus a few broken ones. Rerun after changing it; files the fuzzers
found (crash-*) are kept.

The binary seeds are protobuf messages encoded here by hand (field numbers from
proto/quaestor/service_discovery.proto, proto/grpc/lb/v1/load_balancer.proto and envoy's
discovery.proto), framed as fuzz/src/lib.rs `length_prefixed` reads them.
"""
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def prefixed(messages):
    out = bytearray()
    for message in messages:
        if len(message) < 0xFF:
            out.append(len(message))
        else:
            out += b"\xff" + struct.pack("<H", len(message))
        out += message
    return bytes(out)


def write(target, name, data):
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def config_seeds():
    files = [
        "core/tests/config/csharp/Quaestor.Cluster.Console/quaestor.cluster.config.yml",
        "core/tests/config/csharp/Quaestor.Console.serverConfig/quaestor.config.yml",
        "core/tests/config/csharp/ConfigurableCluster.Guardian/quaestor.config.yml",
        "core/tests/config/csharp/Quaestor.Console/quaestor.config.yml",
        "core/tests/config/csharp/Quaestor.LoadBalancer.Console/quaestor.loadbalancer.config.yml",
        "sdk-examples/hello-world/quaestor.config.yml",
        "sdk-examples/hello-world-etcd/quaestor.config.yml",
        "sdk-examples/native/quaestor.config.yml",
    ]
    for path in files:
        text = (ROOT / path).read_text(encoding="utf-8-sig")
        # Whole-line comments and blank lines out: the keys stay, the seed gets small.
        lines = [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
        name = path.replace("/", "_").replace("core_tests_config_csharp_", "csharp_")
        write("config", name, ("\n".join(lines) + "\n").encode())
    broken = {
        "broken_unknown_key.yml": "loadBalancerConfig:\n  hostNme: localhost\n  port: 5150\n",
        "broken_duplicate.yml": "clusterConfig:\n  name: a\n  Name: b\n",
        "broken_ports.yml": "agents:\n  - agentType: Worker\n    executablePath: w\n"
        "    processCount: 2\n    ports: [ 5161 ]\n",
        "broken_types.yml": "loadBalancerConfig:\n  port: [ 1, 2 ]\n  probeIntervalMs: -5\n",
        "broken_alias.yml": "a: &x [ *x, *x ]\nb: &y { k: *y }\n",
        "broken_indent.yml": "clusterConfig:\n  name: x\n name2: y\n\t- z\n",
    }
    for name, text in broken.items():
        write("config", name, text.encode())
    # UTF-16 with a BOM, as Windows editors save; then the same cut in the middle of a unit.
    utf16 = b"\xff\xfe" + "agents:\n  Worker:\n    useTLS:\n    ports: [ 1 ]\n".encode("utf-16-le")
    write("config", "utf16_bom.yml", utf16)
    write("config", "broken_utf16_odd.yml", utf16[:-1])


def registry_seeds():
    value = b'{"service":"Worker","control":"127.0.0.1:6161","agent":"quaestor cluster on h","pid":42}'
    seeds = {
        "csharp_value": b"services//Worker/localhost/5161/http\x00Worker",
        "quaestor_value": b"services/prod/Worker/h1/443/https\x00" + value,
        "no_value": b"services//Worker/10.0.0.1/1\x00",
        "bad_port": b"services//Worker/h/0161/http\x00{\"pid\":-1}",
        "bad_scheme": b"services//Worker/h/1/ftp\x00",
        "escapes": b'services/s/W/h/2/http\x00{"control":"","agent":"\\u00e9\\ud83d\\ude00","pid":null}',
    }
    for name, data in seeds.items():
        write("registry_codec", name, data)


def discovery_seeds():
    def request(scope, service, max_count):
        out = b""
        if scope:
            out += field_bytes(1, scope)
        if service:
            out += field_bytes(2, service)
        if max_count:
            out += field_varint(3, max_count)
        return out

    write("discovery", "discover_worker", b"\x00" + request("", "Worker", 0))
    write("discovery", "top_worker_1", b"\x01" + request("", "Worker", 1))
    write("discovery", "top_prod_other", b"\x01" + request("prod", "Other", 5))
    write("discovery", "empty_service", b"\x00" + request("", "", 0))
    write("discovery", "slash", b"\x01" + request("a/b", "Worker/x", -1))


def grpclb_seeds():
    initial = lambda name: field_bytes(1, field_bytes(1, name))
    # ClientStats (field 2): a timestamp and a few counters.
    stats = field_bytes(2, field_bytes(1, field_varint(1, 1700000000)) + field_varint(2, 10))
    write("grpclb", "initial_worker", prefixed([initial("Worker")]))
    write("grpclb", "initial_port_then_stats", prefixed([initial("Worker:443"), stats, stats]))
    write("grpclb", "stats_first", prefixed([stats, initial("Worker")]))
    write("grpclb", "unknown_service", prefixed([initial("Nothing")]))
    write("grpclb", "bad_name", prefixed([initial("a/b")]))


def ads_seeds():
    types = {
        "lds": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "rds": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "cds": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "eds": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    }

    def request(type_url, names=(), node=None, version="", nonce="", error=None):
        out = b""
        if version:
            out += field_bytes(1, version)
        if node is not None:
            out += field_bytes(2, field_bytes(1, node))
        for name in names:
            out += field_bytes(3, name)
        out += field_bytes(4, type_url)
        if nonce:
            out += field_bytes(5, nonce)
        if error is not None:
            out += field_bytes(6, field_varint(1, 3) + field_bytes(2, error))
        return out

    write("ads", "lds_wildcard", prefixed([request(types["lds"], node="n1")]))
    write(
        "ads",
        "full_flow",
        prefixed(
            [
                request(types["lds"], ["Worker"], node="n1"),
                request(types["lds"], ["Worker"], version="1", nonce="1"),
                request(types["rds"], ["Worker"]),
                request(types["cds"], ["Worker", "prod/Other"]),
                request(types["eds"], ["Worker", "prod/Other"]),
            ]
        ),
    )
    write(
        "ads",
        "nack_and_stale",
        prefixed(
            [
                request(types["cds"], ["*"], node="n1"),
                request(types["cds"], ["*"], version="1", nonce="1", error="bad cluster"),
                request(types["cds"], ["Worker"], nonce="0"),
            ]
        ),
    )
    write("ads", "no_node", prefixed([request(types["eds"], ["Worker"])]))
    write("ads", "bad_name", prefixed([request(types["eds"], ["a/b/c"], node="n")]))
    write("ads", "unknown_type", prefixed([request("type.googleapis.com/x", ["Worker"], node="n")]))


def ffi_seeds():
    def call(op, flags, number, *texts):
        return bytes([op, flags]) + struct.pack("<I", number & 0xFFFFFFFF) + b"\x00".join(texts)

    seeds = {
        "result_message": call(0, 0, 7403 | 64 << 8),
        "result_message_small": call(0, 0, 7403 | 3 << 8),
        "last_error_null_buf": call(1, 1, 16 << 8),
        "client_new": call(2, 0, 1000, b"http://127.0.0.1:5150", b"/nonexistent/ca.pem"),
        "client_new_bad": call(2, 2, 0, b"not an address:xx"),
        "discover": call(3, 0, 0, b"", b"Worker"),
        "discover_top_bad_utf8": call(4, 0, 1, b"\xff\xfe", b"Worker"),
        "discover_top_oneshot": call(5, 1, 1, b"", b"Worker"),
        "add_service": call(6, 0, 3, b"Fuzzed"),
        "service_load_serving": call(7, 0, 0, b"Worker", b"Nope"),
        "start_request_as": call(8, 0, 0, b"alice", b"prod"),
        "set_load": call(9, 1, 0x7FC00000),
        "register": call(10, 0, 5161 | 10 << 16, b"http://127.0.0.1:1", b"", b"localhost"),
        "reporter_new_one_file": call(11, 0, 0, b"127.0.0.1", b"cert.pem"),
    }
    for name, data in seeds.items():
        write("ffi", name, data)


if __name__ == "__main__":
    config_seeds()
    registry_seeds()
    discovery_seeds()
    grpclb_seeds()
    ads_seeds()
    ffi_seeds()
