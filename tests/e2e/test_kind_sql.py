"""sql ("SQL Server"): the T-SQL that installs a trigger (INSERT/UPDATE/DELETE) or a view and a
function (SELECT), and the DNS lookup SQL Server makes when it resolves the UNC path.

The looked-up name is built the way the script builds it: base64 of the login's bytes
(`FOR XML PATH(''), BINARY BASE64`), `=` written as `-`, chunks of at most 63 characters, then a
2-digit label and the token hostname. Base64 is case-sensitive, so labels keep their case.
"""

import base64
import random
import re

import pytest

from conftest import unique
from kindtools import BAD_PARAMS, assert_error, assert_one_incident, download_attachment, lookup, new_token

KIND = "sql"


# --- helpers -----------------------------------------------------------------------------

def ident(name):
    """A T-SQL identifier as a script may write it: bare, [bracketed], optionally dbo-qualified."""
    n = re.escape(name)
    return rf"(?:(?:\[?dbo\]?)\.)?(?:{n}|\[{n}\])"


def login_labels(login):
    """What the script's SUSER_NAME() encoding yields for `login` (varchar bytes, base64,
    '=' -> '-', chunks of 63)."""
    enc = base64.b64encode(login.encode("latin-1")).decode().replace("=", "-")
    assert "+" not in enc and "/" not in enc, "pick a login whose base64 is DNS-safe"
    return [enc[i:i + 63] for i in range(0, len(enc), 63)]


def make_token(api, **params):
    """A sql token with these creation parameters."""
    return new_token(api, KIND, "sql", **params)


def script(tok):
    s = tok["renders"][KIND]
    assert isinstance(s, str) and s.strip(), tok
    return s


# --- tests -----------------------------------------------------------------------------

def test_listed_with_human_name(api):
    assert api.ok_get("canarytokens/list")["canarytokens"][KIND] == "SQL Server"


def test_default_is_an_insert_trigger_on_table1(api):
    tok = make_token(api)
    s = script(tok)
    assert tok["hostname"] in s
    assert re.search(rf"CREATE\s+TRIGGER\s+{ident('TRIGGER1')}\s+ON\s+{ident('TABLE1')}", s, re.I), s
    assert re.search(r"\bAFTER\s+INSERT\b", s, re.I), s
    assert not re.search(r"\bAFTER\s+(UPDATE|DELETE)\b", s, re.I), s
    assert re.search(r"xp_dirtree|xp_fileexist", s, re.I), s
    assert "\\\\" in s, "a UNC path starts with two backslashes"
    assert "SUSER_NAME()" in s.upper(), s
    assert re.search(r"BINARY\s+BASE64", s, re.I), s
    assert "'='" in s and "'-'" in s, "the script writes '=' as '-'"


@pytest.mark.parametrize("action", ["INSERT", "UPDATE", "DELETE"])
def test_trigger_actions_and_custom_names(api, action):
    tok = make_token(api, sql_server_sql_action=action, sql_server_table_name="Payroll_2026",
                     sql_server_trigger_name="trg_audit")
    s = script(tok)
    assert tok["hostname"] in s
    assert re.search(rf"CREATE\s+TRIGGER\s+{ident('trg_audit')}\s+ON\s+{ident('Payroll_2026')}", s, re.I), s
    assert re.search(rf"\bAFTER\s+{action}\b", s, re.I), s
    others = {"INSERT", "UPDATE", "DELETE"} - {action}
    assert not re.search(rf"\bAFTER\s+({'|'.join(others)})\b", s, re.I), s
    assert "TABLE1" not in s and "TRIGGER1" not in s
    assert re.search(r"xp_dirtree|xp_fileexist", s, re.I), s


def test_select_makes_a_function_and_a_view(api):
    tok = make_token(api, sql_server_sql_action="SELECT")
    s = script(tok)
    assert tok["hostname"] in s
    assert re.search(rf"CREATE\s+FUNCTION\s+{ident('FUNCTION1')}", s, re.I), s
    assert re.search(rf"CREATE\s+VIEW\s+{ident('VIEW1')}", s, re.I), s
    assert re.search(r"xp_dirtree|xp_fileexist", s, re.I), s

    tok = make_token(api, sql_server_sql_action="SELECT", sql_server_view_name="v_salaries",
                     sql_server_function_name="fn_lookup", sql_server_table_name="Salaries")
    s = script(tok)
    assert re.search(rf"CREATE\s+FUNCTION\s+{ident('fn_lookup')}", s, re.I), s
    assert re.search(rf"CREATE\s+VIEW\s+{ident('v_salaries')}", s, re.I), s
    assert "VIEW1" not in s and "FUNCTION1" not in s


def test_download_is_the_same_script(api):
    tok = make_token(api, sql_server_sql_action="UPDATE")
    _, r = download_attachment(api, tok["canarytoken"], "sql")
    body = r.content
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    text = body.decode("utf-8")
    assert text.replace("\r\n", "\n").strip() == script(tok).replace("\r\n", "\n").strip()
    assert api.fetch_token(tok["canarytoken"])["renders"][KIND] == script(tok)


@pytest.mark.parametrize("param", ["sql_server_table_name", "sql_server_view_name",
                                   "sql_server_function_name", "sql_server_trigger_name"])
@pytest.mark.parametrize("bad", ["1abc", "a-b", "x;DROP TABLE t", "t" * 129, "na me", "tbl]--"],
                         ids=["digit-first", "hyphen", "injection", "129-chars", "space", "bracket"])
def test_invalid_names_are_400(api, param, bad):
    extra = {"sql_server_sql_action": "SELECT"} if param == "sql_server_view_name" else {}
    b = assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m"), **{param: bad}, **extra),
                     400, prefix=BAD_PARAMS)
    assert param in b.get("detail", "") or param in b["message"], b


def test_longest_valid_name_is_accepted(api):
    name = "_" + "a1" * 63 + "Z"  # 128 characters
    assert len(name) == 128
    tok = make_token(api, sql_server_table_name=name)
    assert name in script(tok)


@pytest.mark.parametrize("bad", ["MERGE", "INSERT;", "DROP", "INSERT UPDATE"])
def test_invalid_action_is_400(api, bad):
    b = assert_error(api.post("canarytoken/create", kind=KIND, memo=unique("m"), sql_server_sql_action=bad),
                     400, prefix=BAD_PARAMS)
    assert "sql_server_sql_action" in b.get("detail", "") or "sql_server_sql_action" in b["message"], b


@pytest.mark.parametrize("login", ["sa", "DOMAIN\\svc_backup", "CORPORATE\\svc_sql_reporting_backup_service_acct_01"],
                         ids=["sa", "domain-account", "two-labels"])
def test_lookup_carries_the_sql_login(server, api, login):
    tok = make_token(api)
    assert tok["hostname"] in script(tok)
    labels = login_labels(login)
    if login.startswith("CORPORATE"):
        assert len(labels) == 2 and len(labels[0]) == 63
    digits = f"{random.randrange(100):02d}"
    name = ".".join(labels) + f".{digits}.{tok['hostname']}"
    lookup(server, name)

    _, ev = assert_one_incident(api, tok, KIND, "dns")
    assert ev["sql_username"] == login


def test_select_token_fires_too(server, api):
    tok = make_token(api, sql_server_sql_action="SELECT")
    lookup(server, ".".join(login_labels("reporter")) + f".07.{tok['hostname']}", tcp=True)
    ev = api.wait_events(tok["canarytoken"])[0]
    assert ev["sql_username"] == "reporter"

