"""Error signatures of real exceptions: one id per failure, whatever its values and line numbers."""

from __future__ import annotations

import functools
import json
import os
import sysconfig
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from onward.healing.signature import (
    SIGNATURE_VERSION,
    ErrorSignature,
    fingerprint,
    normalise_message,
)

HERE = __name__


def build(module: str, source: str, filename: str | None = None) -> dict[str, Any]:
    """The namespace of a module named ``module`` made from ``source`` (compiled as ``filename``).

    Its functions carry that module name and file, whatever test builds them: two builds of one
    function at different lines are "the same function moved", as after an edit.
    """
    namespace: dict[str, Any] = {"__name__": module}
    code = compile(textwrap.dedent(source), filename or module.replace(".", "/") + ".py", "exec")
    exec(code, namespace)
    return namespace


def catch(fn: Callable[..., object], *args: object) -> BaseException:
    """The exception ``fn(*args)`` raises, with its traceback."""
    try:
        fn(*args)
    except BaseException as exc:
        return exc
    raise AssertionError(f"{fn} raised nothing")


def innermost_line(exc: BaseException) -> int:
    tb = exc.__traceback__
    assert tb is not None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_lineno


def parse_int(text: str) -> int:
    return int(text)


def parse_json(text: str) -> object:
    return json.loads(text)


def lookup(key: str) -> int:
    return {"a": 1}[key]


def divide(n: int) -> float:
    return n / 0


def read(path: Path) -> str:
    with path.open() as f:
        return f.read()


def wait(seconds: int) -> None:
    raise TimeoutError(f"timeout after {seconds}s")


def load_task(task_id: str) -> None:
    raise LookupError(f"task {task_id} not found")


def chained(key: str) -> None:
    try:
        lookup(key)
    except KeyError as exc:
        raise RuntimeError(f"config {key} missing") from exc


def quietly(text: str) -> None:
    try:
        parse_int(text)
    except ValueError:
        raise RuntimeError("could not parse") from None


def handling(text: str) -> None:
    try:
        parse_int(text)
    except ValueError:
        raise RuntimeError("could not parse")  # noqa: B904 (the implicit context is the point)


# --- real exceptions --------------------------------------------------------------------------


def test_int_of_bad_text() -> None:
    sig = fingerprint(catch(parse_int, "abc123"))
    assert sig.error_type == "ValueError"
    assert sig.message == "invalid literal for int() with base <n>: <str>"
    assert sig.frames == (f"{HERE}:catch", f"{HERE}:parse_int")
    assert sig.causes == ()
    assert sig.version == SIGNATURE_VERSION


def test_missing_file(tmp_path: Path) -> None:
    one = fingerprint(catch(read, tmp_path / "missing.txt"))
    other = fingerprint(catch(read, tmp_path / "deeper" / "other.json"))
    assert one.error_type == "FileNotFoundError"
    # the strerror alone: the filename is a value
    assert one.message == "No such file or directory"
    assert one.frames[-1] == f"{HERE}:read"
    assert one.id == other.id


def test_json_frames_are_skipped() -> None:
    exc = catch(parse_json, "{bad")
    raw = []
    tb = exc.__traceback__
    while tb is not None:
        raw.append(tb.tb_frame.f_globals["__name__"])
        tb = tb.tb_next
    assert "json.decoder" in raw  # the traceback does go through the stdlib...
    sig = fingerprint(exc)
    assert sig.error_type == "json.decoder.JSONDecodeError"
    assert sig.message == (
        "Expecting property name enclosed in double quotes: line <n> column <n> (char <n>)"
    )
    assert sig.frames == (f"{HERE}:catch", f"{HERE}:parse_json")  # ...but no json frame is kept


def test_key_error_and_zero_division() -> None:
    key = fingerprint(catch(lookup, "user_id"))
    assert (key.error_type, key.message) == ("KeyError", "<str>")
    assert key.id == fingerprint(catch(lookup, "other")).id
    zero = fingerprint(catch(divide, 7))
    assert (zero.error_type, zero.message) == ("ZeroDivisionError", "division by zero")
    assert zero.frames[-1] == f"{HERE}:divide"


def test_raise_from_gives_the_cause() -> None:
    sig = fingerprint(catch(chained, "db_url"))
    assert sig.error_type == "RuntimeError"
    assert sig.message == "config db_url missing"
    assert sig.causes == ("KeyError: <str>",)
    # only the outer exception's own frames: lookup() raised the cause, not this one
    assert sig.frames == (f"{HERE}:catch", f"{HERE}:chained")


def test_implicit_context_is_a_cause_unless_suppressed() -> None:
    loud = fingerprint(catch(handling, "x"))
    assert loud.causes == ("ValueError: invalid literal for int() with base <n>: <str>",)
    quiet = fingerprint(catch(quietly, "x"))
    assert quiet.causes == ()


def test_os_error_with_filename() -> None:
    one = fingerprint(OSError(13, "Permission denied", "/etc/shadow"))
    other = fingerprint(OSError(13, "Permission denied", "C:\\Windows\\system.ini"))
    assert one.message == "Permission denied"
    assert one.id == other.id
    # without a strerror, the message is str()
    assert fingerprint(OSError("disk 3 is full")).message == "disk <n> is full"


def test_a_broken_str_gives_the_type_name() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    sig = fingerprint(Broken())
    assert sig.message == "Broken"
    assert sig.error_type == f"{HERE}.test_a_broken_str_gives_the_type_name.<locals>.Broken"


# --- one failure, one id ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "one", "other"),
    [
        (parse_int, "x1", "x2"),
        (parse_int, "12.5", "-3e9"),
        (wait, 30, 45),
        (load_task, str(uuid.uuid4()), str(uuid.uuid4())),
        (lookup, "alpha", "beta"),
    ],
)
def test_other_values_give_the_same_id(fn: Callable[[Any], object], one: Any, other: Any) -> None:
    assert fingerprint(catch(fn, one)).id == fingerprint(catch(fn, other)).id


def test_other_functions_give_other_ids() -> None:
    source = """
        def {name}(text):
            return int(text)
    """
    shop = build("shop.orders", source.format(name="load"))
    also = build("shop.orders", source.format(name="parse"))
    elsewhere = build("shop.billing", source.format(name="load"))
    ids = {
        fingerprint(catch(ns[name], "x1"), app_modules=["shop"]).id
        for ns, name in ((shop, "load"), (also, "parse"), (elsewhere, "load"))
    }
    assert len(ids) == 3
    assert fingerprint(catch(parse_int, "x")).id != fingerprint(catch(handling, "x")).id


def test_line_numbers_do_not_matter() -> None:
    before = build("shop.orders", "def load(text):\n    return int(text)\n")
    after = build(
        "shop.orders", "\n\n\n# an edit above\n\ndef load(text):\n\n    return int(text)\n"
    )
    one, other = catch(before["load"], "x"), catch(after["load"], "y")
    assert innermost_line(one) != innermost_line(other)
    sig = fingerprint(one, app_modules=["shop"])
    assert sig.frames == ("shop.orders:load",)
    assert sig.id == fingerprint(other, app_modules=["shop"]).id


def test_identical_code_in_two_modules_is_told_apart() -> None:
    # code objects compare by value: a cache keyed by them would mix the two modules up
    source = "def load(text):\n    return int(text)\n"
    a, b = build("shop.a", source, "shop/x.py"), build("shop.b", source, "shop/x.py")
    assert a["load"].__code__ == b["load"].__code__
    assert fingerprint(catch(a["load"], "x"), app_modules=["shop"]).frames == ("shop.a:load",)
    assert fingerprint(catch(b["load"], "x"), app_modules=["shop"]).frames == ("shop.b:load",)


def test_the_version_is_in_the_id() -> None:
    sig = fingerprint(catch(parse_int, "x"))
    prefix, _, digest = sig.id.partition("-")
    assert prefix == f"v{SIGNATURE_VERSION}"
    assert len(digest) == 16
    int(digest, 16)


def test_the_id_is_pinned() -> None:
    """A change of the algorithm that moves this id must bump SIGNATURE_VERSION (and this test)."""
    ns = build(
        "golden.app",
        """
        def fail(key):
            try:
                {}[key]
            except KeyError as exc:
                raise ValueError(f"bad value 42 for {key!r} at /tmp/x") from exc
        """,
    )
    sig = fingerprint(catch(ns["fail"], "k"), app_modules=["golden"])
    assert sig == ErrorSignature(
        id="v1-7ef487c84d8992c2",
        error_type="ValueError",
        message="bad value <n> for <str> at <path>",
        frames=("golden.app:fail",),
        causes=("KeyError: <str>",),
        version=1,
    )


# --- the chain and the frames -----------------------------------------------------------------


def test_a_cause_cycle_does_not_loop() -> None:
    a, b = ValueError("a"), KeyError("b")
    a.__cause__, b.__cause__ = b, a
    assert fingerprint(a).causes == ("KeyError: <str>",)
    c = RuntimeError("c")
    c.__context__ = c
    assert fingerprint(c).causes == ()


def test_a_long_chain_is_cut_to_five() -> None:
    exc: BaseException = ValueError("0")
    for i in range(1, 10):
        outer = ValueError(f"link {i}")
        outer.__cause__ = exc
        exc = outer
    assert len(fingerprint(exc).causes) == 5


def test_the_innermost_eight_frames_are_kept() -> None:
    ns = build(
        "shop.deep",
        """
        def down(n):
            if n == 0:
                raise ValueError("bottom")
            return down(n - 1)

        def top():
            return down(11)
        """,
    )
    sig = fingerprint(catch(ns["top"]), app_modules=["shop"])
    assert sig.frames == ("shop.deep:down",) * 8


@pytest.mark.parametrize("package", ["onward.runtime", "onward.events", "onward.projections"])
def test_onwards_own_frames_are_skipped(package: str) -> None:
    ns = build(f"{package}.wrapper", "def call(fn, arg):\n    return fn(arg)\n")
    sig = fingerprint(catch(ns["call"], parse_int, "x"))
    assert sig.frames == (f"{HERE}:catch", f"{HERE}:parse_int")


def test_library_files_are_skipped() -> None:
    source = "def call(fn, arg):\n    return fn(arg)\n"
    stdlib = os.path.join(sysconfig.get_paths()["stdlib"], "notastdlibmodule.py")
    installed = os.path.join("/opt/venv/lib/python3.11/site-packages/vendor", "client.py")
    for module, filename in (("notastdlibmodule", stdlib), ("vendor.client", installed)):
        ns = build(module, source, filename)
        sig = fingerprint(catch(ns["call"], parse_int, "x"))
        assert sig.frames == (f"{HERE}:catch", f"{HERE}:parse_int"), module


def test_site_packages_frames_are_skipped() -> None:
    exc = catch(pytest.fail, "no")
    assert fingerprint(exc).frames == (f"{HERE}:catch",)


def test_app_modules_choose_the_frames() -> None:
    relay = "def call(fn, arg):\n    return fn(arg)\n"
    shop, cart = build("shop", relay), build("shopping.cart", relay)
    load = build("shop.orders", "def load(t):\n    return int(t)\n")["load"]
    exc = catch(shop["call"], functools.partial(cart["call"], load), "x")
    assert fingerprint(exc, app_modules=["shop"]).frames == ("shop:call", "shop.orders:load")
    assert fingerprint(exc, app_modules="shop").frames == ("shop:call", "shop.orders:load")
    assert fingerprint(exc, app_modules=["shopping"]).frames == ("shopping.cart:call",)
    assert fingerprint(exc, app_modules=[]).frames == ()
    # by default the engine's package names and the stdlib are out, everything else in
    assert fingerprint(exc).frames == (
        f"{HERE}:catch",
        "shop:call",
        "shopping.cart:call",
        "shop.orders:load",
    )


# --- the struct -------------------------------------------------------------------------------


def test_str_is_one_line() -> None:
    sig = fingerprint(catch(chained, "db_url"))
    text = str(sig)
    assert "\n" not in text
    assert text == (
        f"RuntimeError: config db_url missing at {HERE}:chained (caused by KeyError) [{sig.id}]"
    )
    bare = fingerprint(ValueError())
    assert str(bare) == f"ValueError [{bare.id}]"


def test_round_trips_through_json() -> None:
    sig = fingerprint(catch(chained, "db_url"))
    assert msgspec.json.decode(msgspec.json.encode(sig), type=ErrorSignature) == sig
    with pytest.raises(AttributeError):
        sig.id = "v1-0"  # type: ignore[misc]


# --- messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timeout after 30s", "timeout after <n>s"),
        ("retry -3 of +1.5e-3", "retry <n> of <n>"),
        ("task 3f2a1b4c-1234-4abc-9def-0123456789ab lost", "task <uuid> lost"),
        ("<object object at 0x7f3a2b10>", "<object object at <addr>>"),
        ("commit 9fceb02d0ae598e95dc970b74767f19372d61af8 bad", "commit <hex> bad"),
        ("value 12345678 too big", "value <n> too big"),
        ("at 2024-05-01T12:00:00.123+00:00 and 2024-05-01", "at <time> and <time>"),
        ("GET https://api.example.org/v1/items?id=3 failed.", "GET <url> failed."),
        ("no such file: /var/data/x.csv, retrying", "no such file: <path>, retrying"),
        ("see src/app/main.py:12", "see <path>:<n>"),
        ("under ~/cache/x and ./build/y and a/b/c", "under <path> and <path> and <path>"),
        ("C:\\Users\\me\\x.txt missing", "<path> missing"),
        ("No module named 'foo.bar'", "No module named <str>"),
        ("key \"a b c\" and 'it's' here", "key <str> and 'it's' here"),
        ("can't open and don't", "can't open and don't"),
        ("  many\n\tspaces  ", "many spaces"),
        ("utf-8 int64 x86_64 and/or", "utf-<n> int64 x86_64 and/or"),
        ("", ""),
    ],
)
def test_normalise_message(text: str, expected: str) -> None:
    assert normalise_message(text) == expected
    assert normalise_message(expected) == expected


def test_a_long_message_is_cut_where_a_second_pass_reads_it_alike() -> None:
    text = "word " * 100
    out = normalise_message(text)
    assert len(out) <= 300
    assert out.endswith("word")
    # after a punctuation mark, else marked: the end of a cut run must not read as a value's end
    assert normalise_message("a," * 200) == "a," * 150
    assert normalise_message("x" * 1000) == "x" * 295 + "<cut>"
    run = "(" * 297 + "'a'x"
    assert normalise_message(run) == "(" * 295 + "<cut>"


# --- texts to store: redacted before they are normalised ---------------------------------------

OPENAI_KEY = "sk-live-4eC39HqLyjWDarjtT1zdp7dc"
SLACK_TOKEN = "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"


def rejected(token: str, cause_token: str) -> None:
    try:
        raise ConnectionError(f"handshake refused for {cause_token}")
    except ConnectionError as exc:
        raise PermissionError(f"401 from the API, token {token} rejected") from exc


def fragments(secret: str, size: int = 10) -> list[str]:
    """Every run of ``size`` characters of ``secret``: what would be left of it once some of
    its characters became placeholders."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def test_a_redactor_keeps_secrets_out_of_the_texts_and_the_id_as_it_was() -> None:
    from onward.events import Redactor

    exc = catch(rejected, OPENAI_KEY, SLACK_TOKEN)
    plain = fingerprint(exc)
    # Normalised first, the secrets no longer read as tokens: what is stored must not be that.
    assert "sk-live-<n>eC39HqLyjWDarjtT1zdp7dc" in plain.message
    redacted = fingerprint(exc, redact=Redactor().redact)
    assert redacted.id == plain.id  # the learning DB is keyed by it
    assert (redacted.error_type, redacted.frames) == (plain.error_type, plain.frames)
    assert redacted.message == "<n> from the API, token [REDACTED:openai-key] rejected"
    assert redacted.causes == ("ConnectionError: handshake refused for [REDACTED:slack-token]",)
    texts = " ".join([redacted.message, *redacted.causes, str(redacted)])
    for secret in (OPENAI_KEY, SLACK_TOKEN):
        assert not [f for f in fragments(secret) if f in texts], secret


def test_a_redactor_that_finds_nothing_changes_nothing() -> None:
    from onward.events import Redactor

    exc = catch(chained, "db_url")
    assert fingerprint(exc, redact=Redactor().redact) == fingerprint(exc)
