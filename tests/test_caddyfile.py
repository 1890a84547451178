"""caddyfile.switch_upstream against Debian's real caddy 2.6: `caddy adapt` of the file before
and after shows only the dials of the switched host:port changed, `caddy validate` passes, and
every other byte is the same; what it cannot be sure of is refused with the line."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gbdeploy.caddyfile import CaddyfileRefused, dialled_ports, switch_upstream

HOST, OLD, NEW = "10.16.164.33", 5858, 5868

# The rest of a production proxy: sites that must come out byte-identical.
OTHER_SITES = """\
# botui and the rest: untouched by a botserver switch
http://ui.example.com {
\tencode gzip
\treverse_proxy 10.16.164.33:5859
}

http://drive.example.com, http://s3.example.com {
\treverse_proxy 10.16.164.40:9000 10.16.164.41:5858 {
\t\tlb_policy first
\t}
}

http://mail.example.com {
\treverse_proxy localhost:8080
\tlog {
\t\toutput stderr
\t}
}
"""


def caddyfile(storage: Path, site: str) -> str:
    return (
        "{\n"
        f"\tstorage file_system {{\n\t\troot {storage}\n\t}}\n"
        "\tauto_https off\n"
        "\tadmin off\n"
        "}\n\n" + site + "\n" + OTHER_SITES
    )


def caddy() -> str:
    found = shutil.which("caddy")
    if found is None:
        pytest.skip("Debian's caddy is not installed (bash .ci/setup installs it)")
    return found


def adapted(path: Path) -> Any:
    result = subprocess.run(
        [caddy(), "adapt", "--adapter", "caddyfile", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return ordered(json.loads(result.stdout))


def ordered(config: Any) -> Any:
    """Caddy writes `skip_hosts` in its map's random order: sorted, two adaptations compare."""
    if isinstance(config, dict):
        return {
            key: sorted(value) if key == "skip_hosts" else ordered(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [ordered(item) for item in config]
    return config


def moved(config: Any, before: str, after: str) -> Any:
    """`config` with every upstream `dial` equal to `before` (any network prefix) set to
    `after`: what the adapted JSON must become, and nothing more."""
    if isinstance(config, dict):
        result = {}
        for key, value in config.items():
            if key == "dial" and isinstance(value, str) and value.split("/")[-1] == before:
                value = value[: len(value) - len(before)] + after
            result[key] = moved(value, before, after)
        return result
    if isinstance(config, list):
        return [moved(item, before, after) for item in config]
    return config


SITES = {
    "plain": "http://chat.example.com {\n\treverse_proxy 10.16.164.33:5858\n}\n",
    "url": "http://chat.example.com {\n\treverse_proxy http://10.16.164.33:5858\n}\n",
    "several upstreams on one line": (
        "http://chat.example.com {\n"
        "\treverse_proxy 10.16.164.34:5858 10.16.164.33:5858 10.16.164.35:5858\n"
        "}\n"
    ),
    "to inside a block": (
        "http://chat.example.com {\n"
        "\treverse_proxy {\n"
        "\t\tto 10.16.164.33:5858\n"
        "\t\tto `10.16.164.34:5858`\n"
        "\t\tlb_policy first\n"
        "\t\theader_up Host {upstream_hostport}\n"
        "\t}\n"
        "}\n"
    ),
    "matchers before the upstreams": (
        "http://chat.example.com, http://bot.example.com {\n"
        "\t@ws path /ws*\n"
        "\treverse_proxy @ws 10.16.164.33:5858\n"
        "\treverse_proxy /api/* tcp/10.16.164.33:5858\n"
        '\treverse_proxy * "10.16.164.33:5858"\n'
        "}\n"
    ),
    "nested handle, snippet and a continued line": (
        "(bot) {\n\treverse_proxy 10.16.164.33:5858\n}\n\n"
        "http://chat.example.com {\n"
        "\timport bot\n"
        "\thandle /v1/* {\n"
        "\t\treverse_proxy 10.16.164.41:5858 \\\n"
        "\t\t\t10.16.164.33:5858\n"
        "\t}\n"
        '\trespond /old "reverse_proxy 10.16.164.33:5858 is not here"\n'
        "}\n"
    ),
    "h2c url": "http://chat.example.com {\n\treverse_proxy h2c://10.16.164.33:5858\n}\n",
    "windows line ends and comments": (
        "http://chat.example.com {\r\n"
        "\t# reverse_proxy 10.16.164.33:5858 (a comment stays as it is)\r\n"
        "\treverse_proxy 10.16.164.33:5858 # the bot\r\n"
        "}\r\n"
    ),
}


@pytest.mark.slow  # Debian's caddy
@pytest.mark.parametrize("form", list(SITES))
def test_only_the_dials_of_the_host_and_port_change(tmp_path: Path, form: str):
    before = caddyfile(tmp_path / "storage", SITES[form])
    switched = switch_upstream(before, HOST, OLD, NEW)

    assert switched.changes, "something was switched"
    old_file, new_file = tmp_path / "before", tmp_path / "after"
    old_file.write_text(before)
    new_file.write_text(switched.text)
    assert adapted(new_file) == moved(adapted(old_file), f"{HOST}:{OLD}", f"{HOST}:{NEW}")
    assert adapted(new_file) != adapted(old_file)
    validate = subprocess.run(
        [caddy(), "validate", "--adapter", "caddyfile", "--config", str(new_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert validate.returncode == 0, validate.stderr
    # every other byte: the other sites, comments, tabs, the text in `respond`
    assert switched.text.endswith(OTHER_SITES)
    assert switched.text.replace(f"{HOST}:{NEW}", f"{HOST}:{OLD}") == before
    # and only the upstreams: not the same text in `respond`, nor anything else
    assert switched.text.count(f"{HOST}:{NEW}") == len(switched.changes)


def test_there_and_back_gives_the_same_bytes(tmp_path: Path):
    before = caddyfile(tmp_path, SITES["matchers before the upstreams"])
    there = switch_upstream(before, HOST, OLD, NEW).text
    assert switch_upstream(there, HOST, NEW, OLD).text == before


def test_the_changes_name_their_lines(tmp_path: Path):
    text = caddyfile(tmp_path, SITES["several upstreams on one line"])
    (change,) = switch_upstream(text, HOST, OLD, NEW).changes
    assert text.splitlines()[change.line - 1].strip().startswith("reverse_proxy 10.16.164.34")
    assert (change.before, change.after) == ("10.16.164.33:5858", "10.16.164.33:5868")


def test_dialled_ports_reads_which_port_the_proxy_sends_to(tmp_path: Path):
    text = caddyfile(tmp_path, SITES["plain"])
    assert dialled_ports(text, HOST) == {5858: [10], 5859: [16]}
    assert dialled_ports(switch_upstream(text, HOST, OLD, NEW).text, HOST)[NEW] == [10]


@pytest.mark.parametrize(
    ("site", "said"),
    [
        ("reverse_proxy {$BOT_UPSTREAM}", "line 10: `{$BOT_UPSTREAM}` holds a placeholder"),
        ("reverse_proxy 10.16.164.33:{$BOT_PORT}", "holds a placeholder"),
        ("reverse_proxy 10.16.164.33:5858-5859", "in a form this cannot edit"),
        ("reverse_proxy srv+_http._tcp.10.16.164.33", "may dial 10.16.164.33:5858"),
        ("reverse_proxy 10.16.164.33:5858 10.16.164.33:5868", "already dials port 5868"),
        (
            "reverse_proxy 10.16.164.33:5858 {\n\t\thealth_port 5858\n\t}",
            "`health_port 5858` would keep checking the old port",
        ),
        (
            "reverse_proxy 10.16.164.33:5858\n\tforward_auth 10.16.164.33:5858 {\n"
            "\t\turi /auth\n\t}",
            "`forward_auth 10.16.164.33:5858` may dial",
        ),
    ],
)
def test_an_unsure_or_unsafe_form_is_refused_naming_the_line(tmp_path: Path, site: str, said: str):
    text = caddyfile(tmp_path, f"http://chat.example.com {{\n\t{site}\n}}\n")
    with pytest.raises(CaddyfileRefused) as refused:
        switch_upstream(text, HOST, OLD, NEW)
    assert said in str(refused.value)
    assert "nothing was changed" in str(refused.value)
    assert refused.value.exit_code == 2


def test_a_loopback_host_under_another_name_is_refused(tmp_path: Path):
    text = caddyfile(tmp_path, "http://chat.example.com {\n\treverse_proxy :5858\n}\n")
    with pytest.raises(CaddyfileRefused, match=r"`:5858` may dial 127\.0\.0\.1:5858"):
        switch_upstream(text, "127.0.0.1", OLD, NEW)


def test_no_upstream_for_the_host_is_refused_with_what_to_check(tmp_path: Path):
    text = caddyfile(tmp_path, "import /etc/caddy/sites/*.caddy\n")
    with pytest.raises(CaddyfileRefused) as refused:
        switch_upstream(text, HOST, OLD, NEW)
    message = str(refused.value)
    assert "no reverse_proxy in the Caddyfile dials 10.16.164.33:5858" in message
    assert "it imports /etc/caddy/sites/*.caddy, which a switch does not edit" in message


@pytest.mark.parametrize(
    "broken",
    [
        'http://x {\n\trespond "open\n',
        "http://x {\n\treverse_proxy a:1\n",
        "}\n",
        "http://x {\n\thandle /x { reverse_proxy 10.16.164.33:5858 }\n}\n",
    ],
)
def test_a_file_caddy_could_not_read_is_refused(broken: str):
    with pytest.raises(CaddyfileRefused, match=r"line \d+"):
        switch_upstream(broken, HOST, OLD, NEW)


# --- the one lexer (switch and doctor), at its edges -----------------------------------------
# The arguments of `header X-N SEARCH REPLACE` as written in a Caddyfile, and the two tokens Caddy
# 2.6 reads from them (test_the_lexer_reads_what_caddy_reads checks each against real caddy).
LEXER_EDGES = (
    (r"a\b c", ("a\\b", "c")),
    (r"a\\ c", ("a\\\\", "c")),
    (r"a\"b c", ('a\\"b', "c")),
    ('"x y"z', ("x y", "z")),
    ('a"b c', ('a"b', "c")),
    ("a#b c # a comment", ("a#b", "c")),
    (r"`q\"r` c", ('q\\"r', "c")),
    (r'"a\\b\"c" d', ('a\\\\b"c', "d")),
    (r'"a\\" d', ("a\\\\", "d")),
    (r"a\ b", ("a", "b")),
    ("one \\\n\t\ttwo", ("one", "two")),
    ("one\\\n\t\ttwo", ("one", "two")),
)


def edges_site() -> str:
    lines = "".join(f"\theader X-{n} {written}\n" for n, (written, _) in enumerate(LEXER_EDGES))
    return f":8080 {{\n{lines}\trespond after 200\n}}\n"


def test_the_lexer_reads_what_caddy_reads(tmp_path: Path):
    from gbdeploy.caddyfile import tokens

    path = tmp_path / "Caddyfile"
    path.write_text(edges_site())
    handlers = adapted(path)["apps"]["http"]["servers"]["srv0"]["routes"][0]["handle"]
    by_caddy = {
        name: (change["search_regexp"], change["replace"])
        for handler in handlers
        if handler["handler"] == "headers"
        for name, (change,) in handler["response"]["replace"].items()
    }

    for n, (written, read) in enumerate(LEXER_EDGES):
        assert by_caddy[f"X-{n}"] == read, written
        words = [token.text for token in tokens(f"header X-{n} {written}\n")]
        assert words == ["header", f"X-{n}", *read], written


def test_doctor_reads_the_caddyfile_with_the_same_lexer_and_lines():
    from gbdeploy.doctor.parsers import parse_caddy_syntax

    (site,) = parse_caddy_syntax(edges_site())
    assert [entry.args[2:] for entry in site.block[:-1]] == [read for _, read in LEXER_EDGES]
    # lines joined by a `\` count again after them: `respond` is on its own line number
    assert site.block[-1].args[0] == "respond"
    assert site.block[-1].line == edges_site().splitlines().index("\trespond after 200") + 1


def test_a_quote_left_open_is_refused_with_its_line_by_both():
    from gbdeploy.doctor.parsers import ParseError, parse_caddy_syntax

    text = 'http://x {\n\treverse_proxy a:1 \\\n\t\tb:2\n\trespond "open\n}\n'
    with pytest.raises(CaddyfileRefused, match="line 4: unterminated quoted text"):
        switch_upstream(text, HOST, OLD, NEW)
    with pytest.raises(ParseError, match="unterminated") as raised:
        parse_caddy_syntax(text)
    assert raised.value.line == 4
