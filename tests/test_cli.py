"""``python -m delula`` as a user runs it: real subprocesses on a real database file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from delula import audit, auth
from delula.config import Settings
from delula.runtime import Runtime
from tests.support.factories import add_pool_items

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "DELULA_DATABASE_URL": url, "DELULA_INSTANT_COOLDOWN_S": "0", "PYTHONPATH": str(ROOT)}

    def run(*args, expect=0, input=None):
        # a session of its own: no terminal, so a password prompt reads stdin
        proc = subprocess.run([sys.executable, "-m", "delula", *args], cwd=tmp_path, env=env, input=input,
                              capture_output=True, text=True, timeout=120, start_new_session=True)
        assert proc.returncode == expect, proc.stdout + proc.stderr
        return proc

    run.url = url
    return run


def _json(proc):
    return json.loads(proc.stdout)


def test_users_create_prints_a_token_that_is_stored_hashed(cli):
    created = _json(cli("users", "create", "alice", "--credits", "5"))
    assert set(created) == {"id", "username", "role", "credits", "isTest", "token"}
    assert created["username"] == "alice" and created["role"] == "user" and created["credits"] == 5
    assert created["isTest"] is False
    assert len(created["token"]) >= 32
    rt = Runtime.from_settings(Settings(database_url=cli.url))
    with rt.store.engine.connect() as conn:
        stored = [r[0] for r in conn.exec_driver_sql("SELECT token_hash FROM api_tokens")]
    rt.close()
    assert created["token"] not in stored and len(stored) == 1 and len(stored[0]) == 64
    cli("users", "create", "alice", expect=1)  # taken
    assert _json(cli("users", "create", "tess", "--test"))["isTest"] is True


def test_instant_refuses_cleanly_then_claims(cli):
    cli("db", "upgrade")
    cli("demo", "seed")
    user = _json(cli("users", "create", "alice", "--credits", "5"))
    refused = cli("instant", "1", "--user", "alice", expect=1)
    assert _json(refused) == {"message": "No instant generation available", "fallbackToModal": True}

    rt = Runtime.from_settings(Settings(database_url=cli.url))
    add_pool_items(rt, 1, 2)
    rt.close()
    claimed = _json(cli("instant", "1", "--user", "alice"))
    assert claimed["generation"]["userId"] == user["id"] and claimed["creditsCharged"] == 3
    assert claimed["creditsRemaining"] == 2
    assert _json(cli("instant", "1", "--user", "alice", expect=1)) == {
        "message": "Insufficient credits", "required": 3, "available": 2}
    assert _json(cli("instant", "999", "--user", "alice", expect=1)) == {"message": "Recipe not found"}
    assert "no user" in _json(cli("instant", "1", "--user", "nobody", expect=1))["message"]


def test_instant_with_choices_and_a_batch(cli):
    from delula import claims

    cli("db", "upgrade")
    cli("demo", "seed")
    cli("users", "create", "cleo", "--credits", "50")
    rt = Runtime.from_settings(Settings(database_url=cli.url))
    field = next(f for f in claims.recipe_variables(rt, 1) if f["type"] in ("dropdown", "radio", "emoji_button"))
    first, second = field["options"][0]["value"], field["options"][1]["value"]
    add_pool_items(rt, 1, 1, form_data={field["id"]: second})
    add_pool_items(rt, 1, 1, form_data={field["id"]: first})
    rt.close()
    choice = f"{field['id']}={first}"
    claimed = _json(cli("instant", "1", "--user", "cleo", "--choice", choice))
    assert claimed["matched"] is True and claimed["generation"]["formData"] == {field["id"]: first}
    missed = _json(cli("instant", "1", "--user", "cleo", "--choice", choice, expect=1))
    assert missed == {"message": "No instant generation available", "fallbackToModal": True,
                      "formData": {field["id"]: first}}
    batch = _json(cli("instant", "1", "--user", "cleo", "--choice", choice, "--prefer", "--count", "2"))
    assert len(batch["generations"]) == 1 and batch["matched"] is False
    bad = _json(cli("instant", "1", "--user", "cleo", "--choice", "nofield=1", expect=1))
    assert bad["errors"] == {"formData.nofield": "is not a field of this recipe"}
    assert "field=value" in cli("instant", "1", "--user", "cleo", "--choice", "oops", expect=2).stderr


def test_grant_recipes_and_revoke(cli):
    cli("users", "create", "bob")
    assert _json(cli("users", "grant", "bob", "12"))["credits"] == 12
    assert "negative" in cli("users", "grant", "bob", "-3", expect=2).stderr   # a bad value: usage (issue 13)
    assert _json(cli("users", "revoke-token", "bob"))["revoked"] == 1
    variables = json.dumps([{"id": "mood", "label": "Mood", "type": "radio", "required": True,
                             "options": [{"label": "Calm", "value": "calm"}]}])
    recipe = _json(cli("recipes", "create", "--name", "Calm Sea", "--credit-cost", "2", "--variables", variables,
                       "--min-backlog", "4"))
    assert recipe["id"] >= 1 and recipe["slug"] == "calm-sea" and recipe["minBacklog"] == 4
    assert "variables" in _json(cli("recipes", "create", "--name", "Bad", "--credit-cost", "1",
                                    "--variables", '[{"id": "x", "type": "video"}]', expect=1))["message"]
    assert "JSON" in cli("recipes", "create", "--name", "Bad", "--credit-cost", "1",
                         "--variables", "{nope", expect=2).stderr                # a bad value: usage (issue 13)


def test_bad_usage_exits_2(cli):
    assert cli("users", "create", expect=2).stderr
    assert "negative" in cli("users", "create", "dave", "--credits", "-1", expect=2).stderr
    assert cli("users", "grant", "dave", "many", expect=2).stderr
    assert cli("instant", "abc", "--user", "x", expect=2).stderr
    assert cli("frobnicate", expect=2).stderr


def test_bad_configuration_exits_2_naming_the_variable(cli, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "delula", "db", "upgrade"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "DELULA_MIN_BACKLOG": "lots", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "DELULA_MIN_BACKLOG" in proc.stderr


def test_audit_lists_the_trail_as_a_table_or_json(cli):
    """``users grant`` is audited (a ``top_up`` by the command line, under the command's request
    id); ``audit`` reads the trail with filters, and refuses a value it cannot use with exit 2."""
    cli("users", "create", "carol", "--test")
    cli("users", "grant", "carol", "7")
    cli("users", "grant", "carol", "3")
    table = cli("audit").stdout.splitlines()
    assert table[0].split()[:3] == ["AT", "ACTOR", "ACTION"] and len(table) == 3
    assert "(system)" in table[1] and "top_up" in table[1] and "carol" in table[1] and '"credits": 3' in table[1]
    events = _json(cli("audit", "--json", "--action", "top_up"))["events"]
    assert [e["details"]["credits"] for e in events] == [3, 7]
    assert events[0]["requestId"] and events[0]["requestId"] != events[1]["requestId"]
    assert _json(cli("audit", "--json", "--actor", "carol"))["events"] == []
    assert _json(cli("audit", "--json", "--since", "2999-01-01T00:00:00Z"))["events"] == []
    for bad in (["--since", "yesterday"], ["--action", "steal"], ["--limit", "0"]):
        assert "error" in cli("audit", *bad, expect=2).stderr


def _runtime(cli) -> Runtime:
    return Runtime.from_settings(Settings(database_url=cli.url))


def test_account_commands_change_the_account_and_end_its_sessions_audited(cli):
    """set-password (stdin, or asked twice), set-role, issue-token, deactivate (issue 13): each
    does what it says, bumps the session epoch where it should, and leaves an audit row with no
    actor (the CLI has no user) and ``via: cli``."""
    created = _json(cli("users", "create", "bob", "--password", "first-password"))
    epochs = []

    def epoch():
        rt = _runtime(cli)
        epochs.append(auth.get_user(rt, username="bob").session_epoch)
        rt.close()

    epoch()
    assert _json(cli("users", "set-password", "bob", "--password-stdin", input="second-password\n")) == {
        "username": "bob", "passwordChanged": True}
    epoch()
    assert "8 to 1024" in _json(cli("users", "set-password", "bob", "--password-stdin", input="short\n",
                                     expect=1))["message"]
    assert "differ" in _json(cli("users", "set-password", "bob", input="third-password\nanother-one\n",
                                 expect=1))["message"]
    cli("users", "set-password", "bob", input="third-password\nthird-password\n")
    epoch()
    assert _json(cli("users", "set-role", "bob", "product"))["role"] == "product"
    epoch()
    cli("users", "set-role", "bob", "admin", expect=2)
    issued = _json(cli("users", "issue-token", "bob"))
    assert set(issued) == {"username", "token"} and issued["token"] != created["token"]
    rt = _runtime(cli)
    assert auth.check_password(rt, "bob", "third-password").username == "bob"
    assert auth.authenticate_token(rt, issued["token"]).username == "bob"
    assert auth.authenticate_token(rt, created["token"]).username == "bob"   # the first one stays
    rt.close()

    assert _json(cli("users", "deactivate", "bob")) == {"username": "bob", "active": False, "tokensRevoked": 2}
    epoch()
    assert "deactivated" in _json(cli("users", "issue-token", "bob", expect=1))["message"]
    assert "no user" in _json(cli("users", "deactivate", "nobody", expect=1))["message"]
    rt = _runtime(cli)
    assert auth.check_password(rt, "bob", "third-password") is None
    assert auth.authenticate_token(rt, issued["token"]) is None
    events = list(reversed(audit.events(rt)))
    rt.close()
    assert epochs == sorted(set(epochs)) and len(epochs) == 5          # each bumped it
    assert [e["action"] for e in events] == ["password_change", "password_change", "role_change", "token_issue",
                                             "deactivate"]
    assert all(e["actorId"] is None and e["details"]["via"] == "cli" and e["targetUser"] == "bob" for e in events)


def test_global_options_may_follow_the_command(cli, tmp_path):
    """``--database-url`` before the command, after it, or after its group (issue 13: after it
    used to exit 2)."""
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    cli("demo", "seed", "--database-url", elsewhere)
    assert "Cat Olympics" in cli("backlog", "status", "--database-url", elsewhere).stdout
    cli("users", "create", "carol", "--database-url", elsewhere)
    cli("users", "--database-url", elsewhere, "grant", "carol", "2")
    assert _json(cli("--database-url", elsewhere, "users", "grant", "carol", "3"))["credits"] == 5
    assert "no user" in _json(cli("users", "grant", "carol", "1", expect=1))["message"]   # not in the default one
    cli("backlog", "status", "--database-url", expect=2)


def test_tables_of_nothing_print_their_header(cli):
    """An empty database: ``backlog status`` and ``audit`` print the header row alone (a table of
    no rows used to end in a TypeError)."""
    first, header = cli("backlog", "status").stdout.splitlines()[:2]
    assert first.startswith("policy in force: forecast, service level 0.98 (from settings)")
    assert header.split()[:3] == ["ID", "RECIPE", "READY"] and "FORECAST/MIN" in header
    assert cli("audit").stdout.split()[:3] == ["AT", "ACTOR", "ACTION"]
