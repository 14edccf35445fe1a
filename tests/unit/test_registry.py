"""The endpoint registry: a new endpoint type is one descriptor, used by config, URL and API alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import copydicom
from copydicom import registry
from copydicom.cli import main
from copydicom.config import parse_config
from copydicom.errors import ConfigError
from copydicom.ledger import Ledger
from copydicom.model import ChangeFeedSource, Destination, Instance, StoreOutcome
from copydicom.registry import BuildContext, EndpointConfig, EndpointType
from copydicom.routes import build_route
from tests.support.synthetic import ct_dataset, to_bytes

REPO = Path(__file__).resolve().parents[2]

# -- a toy destination type, defined here and nowhere else --------------------------------

#: bucket -> {target_id: bytes}: what every ToyDestination stored.
BUCKETS: dict[str, dict[str, bytes]] = {}


class ToyConfig(EndpointConfig):
    type: str = "toy"
    bucket: str

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> ToyConfig:
        bucket = url.split("://", 1)[1].strip("/")
        return cls(name=name or f"toy:{bucket}", bucket=bucket)


class ToyDestination:
    def __init__(self, config: ToyConfig) -> None:
        self.name = config.name
        self.held = BUCKETS.setdefault(config.bucket, {})

    def has(self, target_ids: Iterable[str], *, series_hint: str | None = None) -> set[str]:
        return {t for t in target_ids if t in self.held}

    def store(self, instance: Instance) -> StoreOutcome:
        if instance.target_id in self.held:
            return "existing"
        self.held[instance.target_id] = instance.data
        return "stored"

    def close(self) -> None:
        pass


def _toy(config: ToyConfig, ctx: BuildContext) -> Destination:
    return ToyDestination(config)


TOY: EndpointType[ToyConfig] = EndpointType(
    name="toy", description="in-memory test destination", schemes=("toy",), config=ToyConfig, destination=_toy
)


@pytest.fixture
def toy() -> Iterator[EndpointType[ToyConfig]]:
    BUCKETS.clear()
    registry.register(TOY)
    yield TOY
    registry.unregister("toy")
    BUCKETS.clear()


def write_files(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        (folder / f"f{k}.dcm").write_bytes(to_bytes(ct_dataset(0, 0, 0, k, rows=8, cols=8)))


SUMMARY_KEYS = ["replicated", "skipped_existing", "quarantined", "failed", "seconds"]


def summary_of(line: str) -> dict[str, str]:
    pairs = dict(p.split("=", 1) for p in line.split())
    assert list(pairs) == SUMMARY_KEYS
    return pairs


# -- done means: a new destination type needs one descriptor ------------------------------


def test_toy_destination_by_config(toy: EndpointType[ToyConfig], tmp_path: Path) -> None:
    write_files(tmp_path / "in", 3)
    config = parse_config(
        {
            "state": "state.db",
            "endpoints": {"in": {"type": "folder", "path": "in"}, "box": {"type": "toy", "bucket": "b1"}},
            "routes": [{"name": "r", "source": "in", "destinations": ["box"], "trigger": "manual"}],
        },
        base_dir=tmp_path,
    )
    assert config.endpoints["in"].path == tmp_path / "in"  # relative to the config file's folder
    ledger = Ledger(config.state)
    runtime = build_route(config.routes[0], config, ledger)
    try:
        summary = runtime.pipeline.run(runtime.source.batches())
    finally:
        runtime.close()
        ledger.close()
    assert summary.counts["stored"] == 3 and summary.ok
    assert len(BUCKETS["b1"]) == 3


def test_toy_destination_by_url_cli_and_api(
    toy: EndpointType[ToyConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_files(tmp_path / "in", 2)
    state = tmp_path / "state.db"
    src = (tmp_path / "in").as_uri()
    assert main(["replicate", "--src", src, "--dest", "toy://b2", "--state", str(state)]) == 0
    assert summary_of(capsys.readouterr().out.splitlines()[-1])["replicated"] == "2"
    assert len(BUCKETS["b2"]) == 2
    again = copydicom.replicate(src, "toy://b2", state=state)
    assert (again.counts["stored"], again.counts["existing"], again.ok) == (0, 2, True)
    fresh = copydicom.replicate(src, ["toy://b3"], state=tmp_path / "other.db", dry_run=True)
    assert fresh.counts["stored"] == 2 and BUCKETS.get("b3", {}) == {}


def test_toy_is_listed_and_in_the_schema(toy: EndpointType[ToyConfig], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["endpoints", "--json"]) == 0
    rows = {r["type"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["toy"]["roles"] == ["destination"] and rows["toy"]["schemes"] == ["toy"]
    assert main(["check-config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    mapping = schema["properties"]["endpoints"]["additionalProperties"]["discriminator"]["mapping"]
    assert "toy" in mapping


# -- the registry itself ---------------------------------------------------------------------


def test_builtin_types(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["endpoints", "--json"]) == 0
    rows = {r["type"]: r for r in json.loads(capsys.readouterr().out)}
    assert {n: (r["schemes"], r["roles"]) for n, r in rows.items()} == {
        "orthanc": (["http", "https"], ["source", "destination"]),
        "s3": (["s3"], ["source", "destination"]),
        "sqlite": (["sqlite"], ["index"]),
        "elasticsearch": (["es+http", "es+https"], ["index"]),
        "splunk": (["splunk+http", "splunk+https"], ["index"]),
        "folder": (["file"], ["source"]),
        "dimse": (["dicom"], ["source", "destination"]),
        "dimse_listener": ([], ["source"]),
        "dicomweb": (["dicomweb+http", "dicomweb+https"], ["source", "destination"]),
    }
    assert rows["s3"]["by_identity"] and rows["orthanc"]["change_feed"] and not rows["folder"]["change_feed"]
    assert main(["endpoints"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["TYPE", "SCHEMES", "ROLES", "EXTRA"]
    assert len(table) == 10


def test_scheme_and_name_taken_once(toy: EndpointType[ToyConfig]) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(TOY)
    clash = EndpointType(name="toy2", description="", schemes=("http",), config=ToyConfig, destination=_toy)
    with pytest.raises(ValueError, match="belongs to endpoint type 'orthanc'"):
        registry.register(clash)


def test_missing_extra_is_named(tmp_path: Path) -> None:
    needy = EndpointType(name="needy", description="", schemes=("needy",), config=ToyConfig,
                         destination=_toy, extra="needy", requires=("no_such_module_copydicom",))
    registry.register(needy)
    try:
        with pytest.raises(ConfigError, match=r"needs the package no_such_module_copydicom \(pip install 'copydicom\[needy\]'\)"):
            parse_config({"state": "s.db", "endpoints": {"n": {"type": "needy", "bucket": "x"}}}, base_dir=tmp_path)
    finally:
        registry.unregister("needy")


def test_unknown_type_lists_the_registry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^endpoints.x.type: unknown endpoint type 'ftp' \(one of orthanc, s3"):
        parse_config({"state": "s.db", "endpoints": {"x": {"type": "ftp"}}}, base_dir=tmp_path)


# -- routes take any registered source ------------------------------------------------------


def test_route_source_without_change_feed_needs_another_trigger(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "state": "s.db",
        "endpoints": {"in": {"type": "folder", "path": "in"}, "out": {"type": "sqlite", "path": "i.db"}},
        "routes": [{"name": "r", "source": "in", "indexes": ["out"]}],
    }
    with pytest.raises(ConfigError, match=r"^routes\[0\].trigger: the source 'in' \(type folder\) has no change feed"):
        parse_config(data, base_dir=tmp_path)
    data["routes"][0]["source"] = "out"
    with pytest.raises(ConfigError, match=r"^routes\[0\].source: 'out' is not a source endpoint"):
        parse_config(data, base_dir=tmp_path)


def test_orthanc_route_source_has_the_change_feed(tmp_path: Path) -> None:
    config = parse_config(
        {
            "state": "s.db",
            "endpoints": {"pacs": {"type": "orthanc", "url": "http://127.0.0.1:9"},
                          "idx": {"type": "sqlite", "path": "i.db"}},
            "routes": [{"name": "r", "source": "pacs", "indexes": ["idx"],
                        "trigger": {"changes": {"wait_for": "stable_series"}}}],
        },
        base_dir=tmp_path,
    )
    ledger = Ledger(config.state)
    runtime = build_route(config.routes[0], config, ledger)
    try:
        assert isinstance(runtime.source, ChangeFeedSource)
        assert getattr(runtime.source, "wait_for") == "stable_series"
    finally:
        runtime.close()
        ledger.close()


# -- ranges and unknown keys (hardening item 15) ---------------------------------------------


def _orthanc(**extra: Any) -> dict[str, Any]:
    return {"state": "s.db", "endpoints": {"pacs": {"type": "orthanc", "url": "http://127.0.0.1:8042", **extra}}}


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"url": "http://host:99999"}, "endpoints.pacs.url: the port must be a number from 1 to 65535"),
        ({"url": "http://host:0"}, "endpoints.pacs.url: the port must be a number from 1 to 65535"),
        ({"read_timeout": -5}, "endpoints.pacs.read_timeout: Input should be greater than 0"),
        ({"connect_timeout": 0}, "endpoints.pacs.connect_timeout: Input should be greater than 0"),
        ({"retries": -1}, "endpoints.pacs.retries: Input should be greater than or equal to 0"),
        ({"read_timeout": "soon"}, "endpoints.pacs.read_timeout: Input should be a valid number"),
    ],
)
def test_ranges_are_config_errors(extra: dict[str, Any], expected: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_orthanc(**extra), base_dir=tmp_path)
    assert str(info.value).startswith(expected)


def test_range_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_orthanc(url="http://host:99999")))
    assert main(["check-config", "--offline", str(path)]) == 2
    assert "endpoints.pacs.url: the port" in capsys.readouterr().err
    assert main(["replicate", "--src", "http://host:99999", "--dest", "http://127.0.0.1:9", "--state",
                 str(tmp_path / "s.db")]) == 2


@pytest.mark.parametrize(
    "section, expected",
    [
        ({"logging": {"jsn": True}}, "logging: unknown key(s) jsn"),
        ({"health": {}}, "unknown top-level key(s): health"),
    ],
)
def test_unknown_keys_everywhere(section: dict[str, Any], expected: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"state": "s.db", **section}, base_dir=tmp_path)
    assert str(info.value).startswith(expected)


def test_unknown_stage_key(tmp_path: Path) -> None:
    data = _orthanc()
    data["endpoints"]["idx"] = {"type": "sqlite", "path": "i.db"}
    data["routes"] = [{"name": "r", "source": "pacs", "indexes": ["idx"], "stages": {"dos": False}}]
    with pytest.raises(ConfigError, match=r"^routes\[0\].stages: unknown key\(s\) dos"):
        parse_config(data, base_dir=tmp_path)


# -- the schema -------------------------------------------------------------------------------


def test_schema_is_valid_and_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    import jsonschema

    from copydicom import config as config_module
    from copydicom.schema import PROFILE_KEYS, RouteModel, TopLevel
    from copydicom.stages.deid._profile import _KNOWN_KEYS

    assert main(["check-config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load((REPO / "config" / "copydicom.example.yaml").read_text())
    validator.validate(example)
    bad = json.loads(json.dumps(example))
    bad["endpoints"]["pacs"]["read_timeout"] = -5
    assert not validator.is_valid(bad)
    bad = json.loads(json.dumps(example))
    bad["endpoints"]["pacs"]["type"] = "ftp"
    assert not validator.is_valid(bad)
    every_type = {
        "state": "s.db",
        "endpoints": {
            "a": {"type": "s3", "bucket": "bkt", "multipart_threshold_mb": 16, "access_key_id": "k",
                  "secret_access_key_file": "x"},
            "e": {"type": "elasticsearch", "url": "http://h:9200", "index": "dicom", "username": "u",
                  "password_file": "p"},
            "s": {"type": "splunk", "hec_url": "http://h:8088", "hec_token_file": "t", "index": "main"},
            "q": {"type": "sqlite", "path": "i.db"},
            "f": {"type": "folder", "path": "/x"},
        },
    }
    assert [e.message for e in validator.iter_errors(every_type)] == []
    del every_type["endpoints"]["s"]["hec_token_file"]  # a search-only Splunk endpoint needs no HEC token
    assert validator.is_valid(every_type)
    del every_type["endpoints"]["s"]["index"]  # a required key
    assert not validator.is_valid(every_type)
    # The schema describes exactly the keys the validator accepts.
    assert set(TopLevel.model_fields) == config_module._TOP_KEYS
    assert set(RouteModel.model_fields) == config_module._ROUTE_KEYS
    assert set(PROFILE_KEYS) == _KNOWN_KEYS


# -- the Python API ---------------------------------------------------------------------------


def test_import_copydicom_stays_light() -> None:
    code = (
        "import sys, copydicom\n"
        "heavy = ['boto3', 'botocore', 'elasticsearch', 'splunklib', 'pynetdicom', 'celery']\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "print(callable(copydicom.replicate), callable(copydicom.replicate_tags),"
        " callable(copydicom.conditional_replicate))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=60).stdout
    assert out.splitlines() == ["[]", "True True True"]


def test_api_replicate_tags_to_sqlite(tmp_path: Path) -> None:
    write_files(tmp_path / "in", 2)
    summary = copydicom.replicate_tags((tmp_path / "in").as_uri(), f"sqlite://{tmp_path}/i.db",
                                       state=tmp_path / "s.db")
    assert summary.counts["stored"] == 2
    assert summary.line().startswith("replicated=2 skipped_existing=0 quarantined=0 failed=0 seconds=")


def test_api_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a known endpoint URL scheme"):
        copydicom.replicate("ftp://x", "toy://y", state=tmp_path / "s.db")
    with pytest.raises(ConfigError, match="workers"):
        copydicom.replicate((tmp_path).as_uri(), "http://127.0.0.1:9", workers=0, state=tmp_path / "s.db")


# -- hardening item 4: validity decided once per route ---------------------------------------


def test_unreadable_instance_reaches_no_destination(toy: EndpointType[ToyConfig], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_files(folder, 1)
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 3)
    summary = copydicom.replicate(folder.as_uri(), ["toy://one", "toy://two"], state=tmp_path / "s.db")
    assert (summary.counts["stored"], summary.counts["quarantined"]) == (1, 1)
    assert len(BUCKETS["one"]) == len(BUCKETS["two"]) == 1  # neither holds the broken file


# -- hardening item 14: check-config checks what run checks ----------------------------------


def _checked(tmp_path: Path, url: str, **profile: Any) -> Path:
    data: dict[str, Any] = {
        "state": "s.db",
        "endpoints": {"pacs": {"type": "orthanc", "url": url, "user": "u", "password": "p"},
                      "idx": {"type": "sqlite", "path": "i.db"}},
        "routes": [{"name": "r", "source": "pacs", "indexes": ["idx"]}],
    }
    if profile:
        data["profiles"] = {"research": profile}
        data["routes"][0]["profile"] = "research"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_config_refuses_a_bad_key_file_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "deid.key"
    key.write_text("k" * 64)
    key.chmod(0o644)
    path = _checked(tmp_path, "http://127.0.0.1:9", key_file="deid.key")
    assert main(["check-config", "--offline", str(path)]) == 2
    assert "key_file" in capsys.readouterr().err
    key.chmod(0o600)
    assert main(["check-config", "--offline", str(path)]) == 0
    key.unlink()
    assert main(["check-config", "--offline", str(path)]) == 2


def test_check_config_tries_the_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.scripted_http import Scripted, ScriptedServer

    with ScriptedServer() as server:
        server.script("GET", "/system", Scripted(401, b"unauthorized"), Scripted(200, b"{}"))
        path = _checked(tmp_path, server.url)
        assert main(["check-config", str(path)]) == 2
        assert "endpoints.pacs" in capsys.readouterr().err
        assert main(["check-config", str(path)]) == 0
        assert "endpoint pacs: credentials accepted" in capsys.readouterr().out
        assert main(["check-config", "--offline", str(path)]) == 0
        assert [r.path for r in server.requests] == ["/system", "/system"]
        assert server.requests[0].headers.get("Authorization", "").startswith("Basic ")
        closed = server.url  # the port closes with the server
    assert main(["check-config", str(_checked(tmp_path, closed))]) == 1
    assert "endpoint pacs: unreachable" in capsys.readouterr().out


def test_deidentify_config_paths_are_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    key = conf / "deid.key"
    key.write_text("0123456789abcdef0123456789abcdef")
    key.chmod(0o600)
    (conf / "c.yaml").write_text(yaml.safe_dump({"profiles": {"research": {"key_file": "deid.key"}}}))
    write_files(tmp_path / "in", 1)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # before the fix, deid.key was looked for here
    status = main(["deidentify", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--profile", "research",
                   "--config", str(conf / "c.yaml")])
    assert status == 0, capsys.readouterr().err
    assert len(list((tmp_path / "out").iterdir())) == 1


def test_daemon_exits_2_when_the_source_refuses_its_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hardening item 14: a wrong password is a configuration error for `run` too (systemd stops retrying)."""
    import signal

    from copydicom.daemon import Daemon
    from tests.unit.scripted_http import Scripted, ScriptedServer

    monkeypatch.setattr(signal, "signal", lambda *_: None)  # keep pytest's handlers
    with ScriptedServer() as server:
        server.script("GET", "/changes?since=0&limit=500", Scripted(401, b"unauthorized"))
        config = parse_config(
            {
                "state": "s.db",
                "endpoints": {"pacs": {"type": "orthanc", "url": server.url, "user": "u", "password": "wrong"},
                              "idx": {"type": "sqlite", "path": "i.db"}},
                "routes": [{"name": "r", "source": "pacs", "indexes": ["idx"]}],
            },
            base_dir=tmp_path,
        )
        assert Daemon(config).run_forever() == 2
        assert [r.path for r in server.requests] == ["/changes?since=0&limit=500"]


def test_check_config_tries_elasticsearch_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.fake_elasticsearch import FakeElasticsearch

    with FakeElasticsearch(basic=("cd", "right")) as es:
        for password, status in (("wrong", 2), ("right", 0)):
            path = tmp_path / "c.yaml"
            path.write_text(yaml.safe_dump({
                "state": "s.db",
                "endpoints": {"in": {"type": "folder", "path": "in"},
                              "es": {"type": "elasticsearch", "url": es.url, "index": "dicom",
                                     "username": "cd", "password": password}},
                "routes": [{"name": "r", "source": "in", "indexes": ["es"], "trigger": "manual"}],
            }))
            assert main(["check-config", str(path)]) == status
    captured = capsys.readouterr()
    assert "endpoints.es: elasticsearch es: GET /: HTTP 401" in captured.err
    assert "endpoint es: credentials accepted" in captured.out
    assert "wrong" not in captured.err + captured.out and "right" not in captured.err + captured.out


def test_cron_route_needs_a_selectable_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from copydicom.daemon import Daemon

    monkeypatch.setattr(signal, "signal", lambda *_: None)
    (tmp_path / "in").mkdir()
    config = parse_config(
        {
            "state": "s.db",
            "endpoints": {"in": {"type": "folder", "path": "in"}, "idx": {"type": "sqlite", "path": "i.db"}},
            "routes": [{"name": "r", "source": "in", "indexes": ["idx"],
                        "trigger": {"cron": {"schedule": "0 2 * * *", "query": "SELECT 1", "index": "idx"}}}],
        },
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match="route r: the source in cannot select instances by identifier"):
        Daemon(config).run_forever()


def test_check_config_tries_the_splunk_hec_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.fake_splunk import FakeSplunk

    splunk = FakeSplunk(token="right-token").start()
    try:
        for token, status in (("wrong-token", 2), ("right-token", 0)):
            path = tmp_path / "c.yaml"
            path.write_text(yaml.safe_dump({
                "state": "s.db",
                "endpoints": {"in": {"type": "folder", "path": "in"},
                              "sp": {"type": "splunk", "hec_url": splunk.hec_url, "hec_token": token,
                                     "index": "dicom"}},
                "routes": [{"name": "r", "source": "in", "indexes": ["sp"], "trigger": "manual"}],
            }))
            assert main(["check-config", str(path)]) == status
    finally:
        splunk.stop()
    captured = capsys.readouterr()
    assert "endpoints.sp: POST /services/collector/event on sp: HTTP 403" in captured.err
    assert "endpoint sp: credentials accepted" in captured.out
    assert "-token" not in captured.err + captured.out


def test_api_conditional_replicate_checks_route_and_source(
    toy: EndpointType[ToyConfig], tmp_path: Path
) -> None:
    write_files(tmp_path / "in", 2)
    source, index = (tmp_path / "in").as_uri(), f"sqlite://{tmp_path}/i.db"
    copydicom.replicate_tags(source, index, state=tmp_path / "s.db")
    query = "SELECT sop_uid FROM instances"
    with pytest.raises(ConfigError, match="workers"):
        copydicom.conditional_replicate(source, "toy://b", index=index, query=query, workers=0,
                                        state=tmp_path / "s.db")
    # a folder cannot select instances by identifier: the index query is refused, nothing is stored
    with pytest.raises(ConfigError, match="cannot serve an index query"):
        copydicom.conditional_replicate(source, "toy://b", index=index, query=query, state=tmp_path / "s.db")
    assert not BUCKETS.get("b")
