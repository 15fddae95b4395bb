"""The Prefect UI in a real browser: find the deployment, fill the run form, watch the run finish.

Playwright drives Debian's Chromium (/usr/bin/chromium, from `apt-get install chromium`; no
`playwright install`, which would download a browser) against the real server of the `server`
fixture. Chromium runs headless, without its sandbox (CI runs as root), and with background
networking and component updates off: this machine has no internet, and those would only fail.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

from tests.support.server_runs import (
    last_lineage,
    manifests_created,
    on,
    server_log_tail,
    shrunk_demo_config,
    trigger,
)
from tuneline import registry
from tuneline.artifacts import ArtifactStore
from tuneline.config import STAGES, PipelineConfig
from tuneline.pipeline import plan_keys

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("TUNELINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI containers; the sandbox needs user namespaces
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",  # no internet here: no update checks, no safe-browsing lists
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]

# The run form nests each pydantic model as a card: a property's children sit under its body.
TOP = ".schema-input > .schema-form-property-object > .schema-form-properties > .schema-form-property"
CHILD = ":scope > .p-label__body > fieldset > .p-card > .p-card-content > .schema-form-properties > .schema-form-property"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        msg = f"no Chromium at {CHROMIUM}: `apt-get install chromium` (Debian's package; .ci/run does)"
        if os.environ.get("TUNELINE_BROWSER_REQUIRED"):
            pytest.fail(msg)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    # what went wrong between the browser and the server, for failure messages: the UI itself only
    # shows a generic "Oops. Something went wrong." toast on a 5xx or a network error
    page.api_errors = []

    def on_response(r):
        if r.status >= 400 and "/api/" in r.url:
            try:
                body = r.text()[:600]
            except Exception as e:  # the body may be gone once the page navigated
                body = f"<body unavailable: {e}>"
            page.api_errors.append(f"{r.status} {r.request.method} {r.url[:200]}: {body}")

    page.on("response", on_response)
    page.on("requestfailed", lambda r: page.api_errors.append(f"FAILED {r.method} {r.url[:200]}: {r.failure}"))
    page.on("console", lambda m: m.type == "error" and page.api_errors.append(f"console: {m.text[:600]}"))
    yield page
    ctx.close()


def prop(form, *labels: str):
    """The run-form property at ``labels`` (e.g. "config", "Pii", "Operator"), one level each."""
    scope, sel = form, TOP
    for label in labels:
        header = form.page.locator(
            ":scope > .p-label__header .schema-form-property__label",
            has_text=re.compile(rf"^{re.escape(label)}( \(Optional\))?$"),
        )
        scope, sel = scope.locator(sel).filter(has=header), CHILD
    return scope


def open_custom_run(page, ui_url: str, deployment: str):
    """Deployments -> ``deployment`` -> Run -> Custom run, as a user clicks it; returns the form."""
    page.goto(f"{ui_url}/deployments")
    page.get_by_role("link", name=deployment, exact=True).click()
    page.wait_for_url("**/deployments/deployment/**")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").click()
    page.wait_for_url(re.compile(r"/run(\?|$)"))
    return page.locator("form")


def flow_runs_named(api: str, name: str):
    with on(api), get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))


def submit_run(page, api: str, name: str, tmp_path: Path):
    """Clicks Submit on the run form and waits (60 s) for the flow run ``name`` to exist.

    A server error (5xx) or a dropped request while submitting is what a retry can fix: it is
    reported as a warning and Submit is clicked once more. Anything else fails at once, naming what
    the browser saw go wrong (HTTP errors with their bodies, failed requests, console errors), the
    server's log tail and the page's text, with a screenshot.
    """
    for attempt in (1, 2):
        seen = len(page.api_errors)
        page.get_by_role("button", name="Submit").click()
        deadline = time.time() + 60
        while not (runs := flow_runs_named(api, name)) and time.time() < deadline:
            time.sleep(0.5)
        if runs:
            return runs
        transient = [e for e in page.api_errors[seen:] if re.match(r"(5\d\d|FAILED) ", e)]
        if attempt == 1 and transient:
            warnings.warn(f"the server failed the run form's submit; submitting again: {transient}", stacklevel=2)
            continue
        break
    page.screenshot(path=tmp_path / "submit.png", full_page=True)
    raise AssertionError(
        f"submitting the form started no run (screenshot {tmp_path / 'submit.png'})\n"
        + "browser saw:\n  "
        + "\n  ".join(page.api_errors or ["no HTTP error, failed request or console error"])
        + "\nserver log tail:\n"
        + server_log_tail(api)
        + "\nthe page ends:\n"
        + page.inner_text("body")[-1500:]
    )


def test_custom_run_from_the_ui_form_completes_with_the_changed_parameters(page, server, tmp_path):
    from playwright.sync_api import expect

    ui_url = server.removesuffix("/api")
    root = tmp_path / "artifacts"

    # invalid input is refused with a message naming the field, and no run is created
    form = open_custom_run(page, ui_url, "demo")
    page.locator(".flow-run-name-input input").fill("refused-run")
    prop(form, "config", "Format", "Eval Fraction").locator("input").fill("1.5")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("Validation failed for field 'config.format.eval_fraction'").first).to_be_visible()
    assert re.search(r"/run(\?|$)", page.url)
    assert flow_runs_named(server, "refused-run") == []

    # a fresh form is PipelineConfig: a section per stage with its description, pre-filled from
    # deployments/demo.yaml, and Literal fields as dropdowns of their values
    form = open_custom_run(page, ui_url, "demo")
    pii = prop(form, "config", "Pii")
    expect(pii.locator(":scope > .p-label__header")).to_contain_text(registry.get("pii").describe())
    expect(prop(form, "config", "Run", "Name").locator("textarea")).to_have_value("demo")
    operator = prop(form, "config", "Pii", "Operator").locator("button.p-select-button__control")
    operator.press("ArrowDown")  # opens the dropdown
    expect(page.get_by_role("option")).to_have_text(["replace", "mask", "hash", "redact", "surrogate"])
    page.get_by_role("option", name="mask", exact=True).click()
    expect(operator).to_have_text("mask")

    # the other changed parameters: a private store, a short training
    page.locator(".flow-run-name-input input").fill("from-the-browser")
    prop(form, "config", "Run", "Name").locator("textarea").fill("browser-run")
    prop(form, "config", "Run", "Artifact Root").locator("textarea").fill(str(root))
    prop(form, "config", "Train", "Max Steps").locator("input").fill("2")
    prop(form, "config", "Evaluate", "Num Samples").locator("input").fill("1")
    run_id = submit_run(page, server, "from-the-browser", tmp_path)[0].id

    # watch it in the UI until the state badge says Completed; its reports are under Artifacts
    page.goto(f"{ui_url}/runs/flow-run/{run_id}")
    expect(page.locator(".state-badge.state--completed").first).to_be_visible(timeout=300_000)
    page.get_by_text("Artifacts", exact=True).first.click()
    expect(page.get_by_text("evaluate-report", exact=True).first).to_be_visible()

    # the run used what the form said
    with on(server), get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert run.state.is_completed(), run.state
    assert run.name == "from-the-browser"
    cfg_json = run.parameters["config"]
    assert cfg_json["run"]["name"] == "browser-run"
    assert cfg_json["pii"]["operator"] == "mask"
    assert cfg_json["train"]["max_steps"] == 2

    # ... and its effects are in the store it named: all seven artifacts, PII masked not replaced
    cfg = PipelineConfig.model_validate(cfg_json)
    store = ArtifactStore(root)
    keys = plan_keys(cfg)
    assert all(store.exists(s, keys[s].key) for s in STAGES)
    texts = [r.joined_text() for r in store.open(keys["pii"]).records()]
    assert any("*****" in t for t in texts)
    assert not any("<EMAIL_ADDRESS>" in t or "<PERSON>" in t for t in texts)


def test_failed_run_retried_from_the_ui_reuses_its_finished_stages(page, server, tmp_path):
    from playwright.sync_api import expect

    cfg = shrunk_demo_config(tmp_path)
    # evaluate fails on its attempt and on its task retry: the flow run fails in its last stage
    failed = trigger(server, "finetune/demo", env={"TUNELINE_FAIL": "evaluate:2"}, config=cfg)
    assert failed.state.is_failed(), failed.state
    before = manifests_created(cfg)
    assert set(before) == set(STAGES) - {"evaluate", "export", "card"}  # the run stopped at evaluate

    page.goto(f"{server.removesuffix('/api')}/runs/flow-run/{failed.id}")
    expect(page.locator(".state-badge.state--failed").first).to_be_visible()
    page.get_by_role("button", name="Retry", exact=True).click()
    # Prefect warns that task runs without a persisted result run again: they do, and each
    # finds its stage's artifact by content key and returns at once
    page.get_by_role("dialog").get_by_role("button", name="Retry", exact=True).click()
    expect(page.locator(".state-badge.state--completed").first).to_be_visible(timeout=240_000)

    after = manifests_created(cfg)
    assert set(after) == set(STAGES)
    assert {s: after[s] for s in before} == before, "the retry must reuse the stages that finished"
    lineage = last_lineage(cfg)
    assert {s: o["reused"] for s, o in lineage["stages"].items()} == {s: s not in ("evaluate", "export", "card") for s in STAGES}
