"""The whole app (``app.create_app``) through Flask's test client: its world, signing in, the body
of a callback request."""
from __future__ import annotations

import re

from delula import auth, demo, generations

from .factories import add_pool_items


def app_world(rt) -> tuple:
    """On ``rt`` (with the system user): the demo data, the app, a user of each role
    (``acc_<role>``, password ``pw-<role>-123``; ``acc_user`` a test account), three pool items of recipe 1 and a failed job
    of the user. Returns ``(rt, dash_app, users, failed_job_id)``, ``users`` by role."""
    demo.seed(rt)
    import app as app_module

    dash_app = app_module.create_app(rt, start_scheduler=False)
    users = {role: auth.create_user(rt, f"acc_{role}", role=role, password=f"pw-{role}-123", credits=20,
                                   is_test=role == "user")
             for role in ("user", "product", "ops")}
    add_pool_items(rt, 1, 3)
    failed = generations.create_user_generation(rt, user_id=users["user"][0].id, recipe_id=2, form_data={})
    return rt, dash_app, users, failed.generation["id"]


def login(client, username: str, password: str):
    """Sign in through the login form (with its CSRF token); the form's response."""
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"username": username, "password": password, "csrf": token, "next": "/"})


def signed_in(dash_app, role: str):
    """A test client signed in as the :func:`app_world` user of ``role``."""
    client = dash_app.server.test_client()
    assert login(client, f"acc_{role}", f"pw-{role}-123").status_code == 302
    return client


def callback_body(dash_app, output_fragment: str, inputs: list[dict], state: list[dict]) -> dict:
    """The JSON body the browser posts to ``/_dash-update-component`` for the first callback whose
    outputs include ``output_fragment``."""
    key = next(k for k in dash_app.callback_map if output_fragment in k)
    outputs = [{"id": part.rsplit(".", 1)[0], "property": part.rsplit(".", 1)[1].partition("@")[0]}
               for part in key.strip(".").split("...")]
    return {"output": key, "outputs": outputs, "inputs": inputs, "state": state,
            "changedPropIds": [f"{inputs[0]['id']}.{inputs[0]['property']}"]}
