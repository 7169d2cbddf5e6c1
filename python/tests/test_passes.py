"""optimize, explain and rules_check from Python, with rule files and rule text."""

import kiln
from conftest import MODELS

# A rule that halves what it should not: x + x is 2x, not x.
WRONG = "rule add-self (exact):\n    (Add ?x ?x) => ?x\n"
RIGHT = "rule mul-swap (exact):\n    (Mul ?x ?y) => (Mul ?y ?x)\n"


def test_optimize_builtin_and_user_rules(tmp_path):
    model = MODELS / "bert" / "model.onnx"
    optimized = kiln.optimize(model)
    assert optimized.rules_fired["attention"] == 2
    assert optimized.ops_after["FusedAttention"] == 2
    assert "Softmax" not in optimized.ops_after
    assert optimized.cost_after < optimized.cost_before
    assert optimized.graph.startswith("kiln graph v1")
    assert str(optimized) == optimized.graph
    # Without the built-in rules nothing fires; a user rule, as text or as a file, does.
    assert kiln.optimize(model, builtin=False).rules_fired == {}
    gelu = (
        "rule my-gelu (exact):\n"
        "    (Mul ?x (Mul 0.5 (Add (Erf (Div ?x 1.4142135)) 1)))\n"
        "    => (Gelu[approximate=none] ?x)\n"
    )
    assert kiln.optimize(model, rules=[gelu], builtin=False).rules_fired == {"my-gelu": 2}
    path = tmp_path / "gelu.rules"
    path.write_text(gelu)
    for source in (path, str(path)):
        fired = kiln.optimize(model, rules=[source], builtin=False)
        assert fired.rules_fired == {"my-gelu": 2}
        assert fired.ops_after["Gelu"] == 2


def test_explain():
    report = kiln.explain(MODELS / "llama" / "model.onnx", backend="cranelift")
    assert report["rules_fired"]["attention"] >= 2
    assert report["ops_after"]["FusedAttention"] == 2
    assert report["egraph"]["nodes"] > 0
    cost = report["cost_seconds"]
    assert cost["after"] <= cost["greedy"] <= cost["before"]
    kernels = [s for s in report["steps"] if "symbol" in s]
    assert kernels and all(s["schedule_source"] for s in kernels)
    assert any(s["template"] == "attention" for s in kernels), [s["template"] for s in kernels]
    for step in report["steps"]:
        assert ("fallback" in step) + ("symbol" in step) <= 1


def test_explain_artifact(tmp_path):
    kiln.compile(MODELS / "gpt2" / "model.onnx").compile_to(tmp_path / "a")
    steps = kiln.explain(tmp_path / "a")["steps"]
    assert any("symbol" in s for s in steps)


def test_rules_check_finds_counterexamples():
    builtin = kiln.rules_check(trials=2)
    assert builtin["wrong"] == {}
    assert len(builtin["passed"]) > 20
    result = kiln.rules_check([WRONG, RIGHT], trials=3)
    assert list(result["wrong"]) == ["add-self"]
    assert result["passed"] == ["mul-swap"]
    assert result["wrong"]["add-self"].strip()
