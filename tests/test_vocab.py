"""Vocabularies: published files (folder, cache, download, checksum, offline), custom files and
lists, the registry's path/list handling and the ``interp vocabularies`` commands."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import interpcore
from interpcore import InterpError, OfflineError, Vocabulary
from interpcore.download import ChecksumError, RemoteFile, fetch_url, locate
from interpcore.vocab import from_file, from_list, looks_like_path, resize

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")

PUBLISHED_NAMES = ["laion", "laion_bigrams", "mscoco", "image_descriptions_general",
                   "google_3498_english"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh cache; no vocabulary folder, mirror or offline switch from the environment."""
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("INTERP_VOCAB_DIR", "INTERP_VOCAB_MIRROR", "INTERP_OFFLINE", "HF_HUB_OFFLINE",
                "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("INTERP_DOWNLOAD_RETRIES", "0")  # failures here are meant; no waiting
    return tmp_path


def shared_lines(relpath):
    return (SHARED / relpath).read_text(encoding="utf-8").splitlines()


class Server:
    """A local HTTP server over a folder, counting requests (never the internet)."""

    def __init__(self, root):
        self.requests = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                return super().do_GET()

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def leftover_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# -- the cleaning policy ---------------------------------------------------------------


def test_list_drops_blanks_and_duplicates_keeping_first_and_counts_them():
    v = from_list(["cat", " dog ", "", "cat", "  ", "bird", "dog"])
    assert v.concepts == ["cat", "dog", "bird"]
    assert (v.blank_dropped, v.duplicates_dropped) == (2, 2)


def test_file_with_crlf_bom_and_no_final_newline(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_bytes("\ufeffred\r\ngreen\r\n\r\nblue".encode("utf-8"))
    v = from_file(p)
    assert v.name == "mine"
    assert v.concepts == ["red", "green", "blue"]
    assert v.blank_dropped == 1


def test_size_keeps_first_or_last_in_file_order():
    items = ["a", "b", "c", "d"]
    assert from_list(items, size=2).concepts == ["a", "b"]
    assert from_list(items, size=2, keep="last").concepts == ["c", "d"]


@pytest.mark.parametrize("size", [0, -2, 5, 2.5, "x", True])
def test_bad_size_is_a_clear_error(size):
    with pytest.raises(InterpError, match="size"):
        from_list(["a", "b", "c", "d"], size=size)


def test_size_minus_one_keeps_everything():  # the reference's spelling of "all"
    assert from_list(["a", "b", "c"], size=-1).concepts == ["a", "b", "c"]


def test_empty_vocabulary_is_an_error(tmp_path):
    p = tmp_path / "blank.txt"
    p.write_text("\n  \n\n")
    with pytest.raises(InterpError, match="empty.*3 blank"):
        from_file(p)
    with pytest.raises(InterpError, match="empty"):
        from_list([])


def test_non_string_entries_and_binary_files_are_rejected(tmp_path):
    with pytest.raises(InterpError, match="entry 1 is a int"):
        from_list(["a", 3])
    with pytest.raises(InterpError, match="not one string"):
        from_list("abc")
    p = tmp_path / "bin.txt"
    p.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(InterpError, match="UTF-8"):
        from_file(p)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InterpError, match="not found.*nope.txt"):
        from_file(tmp_path / "nope.txt")


# -- the registry: names, lists, paths ---------------------------------------------------


def test_builtin_vocabularies_are_registered():
    names = interpcore.list_vocabularies()
    for n in PUBLISHED_NAMES + ["file"]:
        assert n in names


def test_registry_accepts_lists_paths_and_the_file_vocabulary(tmp_path):
    p = tmp_path / "concepts.txt"
    p.write_text("sky\nsea\nsky\n")
    assert interpcore.get_vocabulary(["x", "y", "x"]).concepts == ["x", "y"]
    assert interpcore.get_vocabulary(str(p)).concepts == ["sky", "sea"]
    assert interpcore.get_vocabulary(p, size=1).concepts == ["sky"]
    via_name = interpcore.get_vocabulary("file", path=p, keep="last", size=1)
    assert via_name.concepts == ["sea"]
    with pytest.raises(InterpError, match="needs path="):
        interpcore.get_vocabulary("file")


def test_registry_resizes_a_vocabulary_object_by_its_keep_end():
    v = Vocabulary("plain", ["a", "b", "c"])
    assert interpcore.get_vocabulary(v, size=2).concepts == ["a", "b"]
    last = from_list(["a", "b", "c"], keep="last")
    assert resize(last, 1).concepts == ["c"]
    assert interpcore.get_vocabulary(v) is v


def test_unknown_name_suggests_and_missing_path_is_named():
    with pytest.raises(interpcore.UnknownNameError, match="Did you mean: laion"):
        interpcore.get_vocabulary("lion")
    with pytest.raises(InterpError, match="not found"):
        interpcore.get_vocabulary("no/such/file.txt")
    assert looks_like_path("my.txt") and not looks_like_path("laion")


def test_published_vocabulary_rejects_unknown_options(tmp_path):
    with pytest.raises(InterpError, match="no option.*colour"):
        interpcore.get_vocabulary("laion", colour="red")


# -- published files from ../shared/data -------------------------------------------------


@needs_shared
def test_laion_size_10000_is_the_last_10000_lines_in_order(monkeypatch):
    monkeypatch.setenv("INTERP_VOCAB_DIR", str(SHARED))
    v = interpcore.get_vocabulary("laion", size=10000)
    lines = shared_lines("vocab/laion.txt")
    assert len(lines) == 37445
    assert v.concepts == lines[-10000:]
    assert interpcore.get_vocabulary("laion").concepts == lines


@needs_shared
def test_mscoco_blank_line_is_dropped_unless_raw(monkeypatch):
    monkeypatch.setenv("INTERP_VOCAB_DIR", str(SHARED))
    lines = shared_lines("vocab/mscoco.txt")
    blank_at = [i for i, line in enumerate(lines) if not line.strip()]
    assert len(blank_at) == 1
    v = interpcore.get_vocabulary("mscoco", size=20)
    assert v.concepts == [x for x in lines if x.strip()][-20:]
    assert "" not in v.concepts and len(v) == 20 and v.blank_dropped == 1
    raw = interpcore.get_vocabulary("mscoco", size=20, raw=True)
    assert raw.concepts == [x.strip() for x in lines[-20:]]  # SpLiCE's own view, blank included
    assert "" in raw.concepts


@needs_shared
def test_text_pools_load_in_file_order(monkeypatch):
    monkeypatch.setenv("INTERP_VOCAB_DIR", str(SHARED))
    words = interpcore.get_vocabulary("google_3498_english")
    assert words.concepts == shared_lines("text_pools/google_3498_english.txt")
    assert interpcore.get_vocabulary("google_3498_english", size=3).concepts == words[:3]
    desc = interpcore.get_vocabulary("image_descriptions_general")
    lines = shared_lines("text_pools/image_descriptions_general.txt")
    assert len(lines) == 3498
    assert len(desc) + desc.duplicates_dropped == 3498 and desc.blank_dropped == 0
    assert interpcore.get_vocabulary("image_descriptions_general", raw=True).concepts == [
        x.strip() for x in lines
    ]


@needs_shared
def test_folder_option_reads_flat_or_nested_layout(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "laion_bigrams.txt").write_bytes((SHARED / "vocab/laion_bigrams.txt").read_bytes())
    v = interpcore.get_vocabulary("laion_bigrams", size=5, folder=flat)
    assert v.concepts == shared_lines("vocab/laion_bigrams.txt")[-5:]
    assert Path(v.path) == flat / "laion_bigrams.txt"
    nested = interpcore.get_vocabulary("laion_bigrams", size=5, folder=SHARED)
    assert nested.concepts == v.concepts


def test_folder_option_without_the_file_says_where_it_looked(tmp_path):
    with pytest.raises(InterpError, match="laion.txt is not in .*download it from https://"):
        interpcore.get_vocabulary("laion", folder=tmp_path)


def test_a_modified_file_in_a_folder_fails_its_checksum_unless_verify_false(tmp_path):
    (tmp_path / "laion.txt").write_text("my\nown\nwords\n")
    with pytest.raises(ChecksumError, match="verify=False"):
        interpcore.get_vocabulary("laion", folder=tmp_path)
    v = interpcore.get_vocabulary("laion", folder=tmp_path, verify=False, size=2)
    assert v.concepts == ["own", "words"]


def test_offline_without_the_file_is_one_message_saying_what_and_where(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERP_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        interpcore.get_vocabulary("mscoco")
    msg = str(info.value)
    assert "\n" not in msg
    assert "https://raw.githubusercontent.com/AI4LIFE-GROUP/SpLiCE/main/data/vocab/mscoco.txt" in msg
    assert str(tmp_path / "cache") in msg and "INTERP_VOCAB_DIR" in msg


def test_unreachable_server_is_an_offline_error(monkeypatch, tmp_path):
    with Server(tmp_path) as srv:
        url = srv.url
    # the server is shut down: nothing listens there any more
    monkeypatch.setenv("INTERP_VOCAB_MIRROR", url)
    with pytest.raises(OfflineError, match="cannot be reached.*put it at"):
        interpcore.get_vocabulary("laion")


# -- downloads (local server or file:// only) -------------------------------------------


def make_remote(root: Path, text: str, sha=None):
    f = root / "vocab" / "words.txt"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    digest = sha or hashlib.sha256(text.encode()).hexdigest()
    return f, digest


def test_download_is_verified_cached_and_not_repeated(tmp_path):
    served = tmp_path / "served"
    _, digest = make_remote(served, "one\ntwo\n")
    with Server(served) as srv:
        remote = RemoteFile("vocab/words.txt", srv.url + "/vocab/words.txt", digest)
        first = locate(remote, cache_subdir="downloads")
        second = locate(remote, cache_subdir="downloads")
        assert len(srv.requests) == 1
    assert first == second and first.read_text() == "one\ntwo\n"
    assert first.is_relative_to(tmp_path / "cache")


def test_bad_checksum_download_is_rejected_and_leaves_nothing(tmp_path):
    served = tmp_path / "served"
    make_remote(served, "tampered\n")
    cache = tmp_path / "cache"
    with Server(served) as srv:
        remote = RemoteFile("vocab/words.txt", srv.url + "/vocab/words.txt", "0" * 64)
        with pytest.raises(ChecksumError, match="nothing was saved"):
            locate(remote, cache_subdir="downloads")
    assert leftover_files(cache) == []


def test_http_404_is_reported_with_the_url(tmp_path):
    with Server(tmp_path) as srv:
        remote = RemoteFile("vocab/missing.txt", srv.url + "/vocab/missing.txt", "0" * 64)
        with pytest.raises(OfflineError, match="HTTP 404.*missing.txt"):
            locate(remote)
    assert leftover_files(tmp_path / "cache") == []


def test_file_url_download_and_corrupt_cache_entry_is_replaced(tmp_path):
    src, digest = make_remote(tmp_path / "src", "alpha\nbeta\n")
    remote = RemoteFile("vocab/words.txt", src.as_uri(), digest)
    path = locate(remote)
    path.write_text("corrupted")  # e.g. a disk error after the download
    again = locate(remote)
    assert again == path and again.read_text() == "alpha\nbeta\n"


def test_fetch_url_truncated_transfer_leaves_nothing(tmp_path):
    class Short(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only a little")

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        dest = tmp_path / "out" / "x.txt"
        with pytest.raises(OfflineError):
            fetch_url(f"http://127.0.0.1:{httpd.server_address[1]}/x", dest, timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert leftover_files(tmp_path / "out") == []


def test_a_failed_transfer_is_retried_and_then_verified(tmp_path, monkeypatch):
    served = tmp_path / "served"
    _, digest = make_remote(served, "three\nfour\n")
    with Server(served) as srv:
        real = srv.httpd.RequestHandlerClass

        class FlakyOnce(real.func if hasattr(real, "func") else real):
            def do_GET(self):
                srv.requests.append(self.path)
                if len(srv.requests) == 1:
                    self.send_error(503, "busy")  # the first try fails ...
                    return None
                return http.server.SimpleHTTPRequestHandler.do_GET(self)

        srv.httpd.RequestHandlerClass = functools.partial(FlakyOnce, directory=str(served))
        remote = RemoteFile("vocab/words.txt", srv.url + "/vocab/words.txt", digest)
        monkeypatch.setenv("INTERP_DOWNLOAD_RETRIES", "0")
        with pytest.raises(OfflineError, match="HTTP 503"):
            locate(remote)
        srv.requests.clear()
        monkeypatch.setenv("INTERP_DOWNLOAD_RETRIES", "1")  # ... and the retry gets the file
        path = locate(remote)
        assert len(srv.requests) == 2 and path.read_text() == "three\nfour\n"
    assert leftover_files(tmp_path / "cache") == [path]


def test_offline_with_a_good_cached_copy_needs_no_network(tmp_path, monkeypatch):
    src, digest = make_remote(tmp_path / "src", "gamma\n")
    remote = RemoteFile("vocab/words.txt", src.as_uri(), digest)
    path = locate(remote)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any of the three switches is offline mode
    src.unlink()
    assert locate(remote) == path
    path.write_text("corrupted")
    with pytest.raises(OfflineError, match="offline mode"):
        locate(remote)


@needs_shared
def test_published_vocabulary_downloads_from_a_mirror_once(monkeypatch):
    with Server(SHARED) as srv:
        monkeypatch.setenv("INTERP_VOCAB_MIRROR", srv.url)
        v = interpcore.get_vocabulary("laion", size=100)
        again = interpcore.get_vocabulary("laion", size=100)
        assert srv.requests == ["/vocab/laion.txt"]
    assert v.concepts == again.concepts == shared_lines("vocab/laion.txt")[-100:]
    assert "cache" in Path(v.path).parts


# -- the command line --------------------------------------------------------------------


def cli(*args, env=None):
    from interpcore.cli import cli as group

    return CliRunner().invoke(group, list(args), env=env)


def test_cli_show_custom_file_reports_drops(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text("cat\n\ndog\ncat\n")
    out = cli("vocabularies", "show", str(p))
    assert out.exit_code == 0, out.output
    assert "2 entries" in out.output and "1 blank and 1 duplicate" in out.output
    listed = cli("vocabularies", "show", "file", "-o", f"path={p}", "--all")
    assert listed.output.split() == ["cat", "dog"]


@needs_shared
def test_cli_show_json_with_size_head_tail(monkeypatch):
    import json

    monkeypatch.setenv("INTERP_VOCAB_DIR", str(SHARED))
    out = cli("vocabularies", "show", "laion", "--size", "10000", "--head", "2", "--tail", "2",
              "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    lines = shared_lines("vocab/laion.txt")[-10000:]
    assert data["count"] == 10000 and data["keep"] == "last"
    assert data["head"] == lines[:2] and data["tail"] == lines[-2:]


def test_cli_unknown_vocabulary_is_one_line_error():
    out = cli("vocabularies", "show", "lion")
    assert out.exit_code == 1
    assert "unknown vocabulary 'lion'" in out.output and "laion" in out.output


@needs_shared
def test_cli_fetch_copies_into_a_folder(tmp_path):
    with Server(SHARED) as srv:
        out = cli("vocabularies", "fetch", "google_3498_english", "--folder", str(tmp_path / "f"),
                  env={"INTERP_VOCAB_MIRROR": srv.url})
    assert out.exit_code == 0, out.output
    copied = tmp_path / "f" / "google_3498_english.txt"
    assert copied.read_bytes() == (SHARED / "text_pools/google_3498_english.txt").read_bytes()
    # the copied folder now serves as INTERP_VOCAB_DIR for an offline machine
    v = interpcore.get_vocabulary("google_3498_english", folder=tmp_path / "f")
    assert len(v) == 3498


def test_cli_fetch_of_a_vocabulary_without_file_is_an_error(tmp_path):
    out = cli("vocabularies", "fetch", str(tmp_path / "x.txt"))
    assert out.exit_code == 1 and "not found" in out.output


def test_vocabulary_commands_do_not_import_torch(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("a\nb\n")
    code = (
        "import sys\n"
        "from interpcore.cli import main\n"
        f"try:\n    main(['vocabularies', 'show', {str(p)!r}])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "bad = [m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = dict(os.environ, INTERP_CACHE_DIR=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert "2 entries" in res.stdout


# -- contract: every registered vocabulary ------------------------------------------------


def registered_vocabularies():
    return [n for n in interpcore.list_vocabularies() if n != "file"]


@pytest.mark.parametrize("name", registered_vocabularies())
def test_every_registered_vocabulary_meets_the_contract(name, monkeypatch):
    """Loads offline (from ../shared/data where needed), has distinct non-blank strings, and
    size=k gives k of them, in the same order as the full vocabulary."""
    monkeypatch.setenv("INTERP_OFFLINE", "1")
    if SHARED.is_dir():
        monkeypatch.setenv("INTERP_VOCAB_DIR", str(SHARED))
    try:
        full = interpcore.get_vocabulary(name)
    except OfflineError as exc:
        pytest.skip(f"{name} needs a file that is not here: {exc}")
    assert isinstance(full, Vocabulary) and len(full) > 0
    assert all(isinstance(c, str) and c.strip() for c in full.concepts)
    if name in PUBLISHED_NAMES:  # the cleaning policy of interpcore.vocab applies
        assert all(c.strip() == c for c in full.concepts)
        assert len(set(full.concepts)) == len(full.concepts)
    k = min(3, len(full))
    small = interpcore.get_vocabulary(name, size=k)
    assert len(small) == k
    assert small.concepts in (full.concepts[:k], full.concepts[-k:])
