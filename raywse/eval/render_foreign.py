"""The report's section on the foreign zoo: checkpoints written by other code, as they come and as a user following the
README passes them."""

from __future__ import annotations

from raywse.eval.tables import split_tables


def foreign_section(foreign: dict | None, scores: dict) -> list[str]:
    """What a user who brings a checkpoint gets: the foreign zoo within itself and against the zoo."""
    if not foreign:
        return []
    refused = foreign["refused"]
    lines = [
        "",
        "## Foreign checkpoints",
        "",
        f"{foreign['models']} checkpoints written by `foreign/train_foreign.py` (plain PyTorch, its own module names, "
        f"training loop, split and input normalisation, no layer spec; {foreign['learned']} learned), tasks "
        f"{', '.join(foreign['tasks'])}; {len(refused)} refused by graphify"
        + (f" ({'; '.join(f'{p}: {r}' for p, r in list(refused.items())[:3])})" if refused else "")
        + ". Nothing says how their inputs were normalised or which hidden activation they use (their tensors "
        "cannot show it), so each is probed as a user's file is: on the zoo's probe set (a dataset's train rows under "
        "one of the zoo's or the common input normalisations) and with the activation it answers most informatively "
        "(mutual information between probe and predicted class; no label read: `raywse.graph.probe_inference`). "
        + _probe_counts(foreign)
        + " `foreign`: learned foreign checkpoints as queries against the other foreign checkpoints; "
        "`foreign_to_zoo`: those of a task the zoo has, against the whole zoo as an index stores it (the GNN "
        "embedders' database form). Relevant = same task (learned).",
        "",
    ]
    columns = ["queries", "precision@1", "precision@10", "mAP"]
    rows = {name: s for name, s in scores.items() if "foreign" in s}
    lines += split_tables(rows, ("foreign", "foreign_to_zoo"), columns)
    if foreign.get("hinted_models") is None:
        return lines
    refused = foreign["hinted_refused"]
    lines += [
        "**As a user following the README passes them.** Here the same files come with what their owner knows: the "
        "activation (the manifest's `activation`, as `raywse search --activation` states it) and, where the foreign "
        "code wrote its `probes.npz`, the zoo's own probe inputs "
        "(`raywse probes`) under the foreign zoo's input normalisation (`--probe-data`); without one, inferred probes. "
        f"{foreign['hinted_models']} graphified, {len(refused)} refused.",
        "",
    ]
    return lines + split_tables(rows, ("foreign_hinted", "foreign_to_zoo_hinted"), columns)


def _probe_counts(foreign: dict) -> str:
    """One sentence: which probe sets the foreign files were probed on, and the activations inferred."""
    if "probe_sources" not in foreign:
        return ""
    sources = ", ".join(f"`{s}` {n}" for s, n in foreign["probe_sources"].items())
    acts = ", ".join(f"{a} {n}" for a, n in foreign["inferred_activations"].items())
    agrees = foreign.get("activation_as_stated")
    told = (
        ""
        if agrees is None
        else f"; the manifest's activation for {agrees} of {sum(foreign['inferred_activations'].values())}"
    )
    return f"Probe sets chosen: {sources}. Activations inferred: {acts or 'none'}{told}."
