"""A sweep in two stages: every trial continues a trial of another sweep (adapting a trained run).

GEM's adaptability-versus-forgetting study (Fig. 11) trains parents, then
adapts each one to an added domain. As one command, the child sweep names
its parent sweep under ``sweep.parents``:

    sweep:
      space: {router: [gem, topk], seed: [0, 1, 2]}
      parents:
        sweep: study_adapt_parents      # a file of experiments/sweep/, run first by the same command
        match: [router, seed]           # a trial continues the parent trial with these values
        set: {adapt.add: [noise], adapt.new_experts: 1}   # config keys every trial sets beside adapt.parent

``gemlab sweep`` runs (or, finished, restores) the parent sweep with the
same command-line overrides, then gives each trial ``adapt.parent`` = its
parent trial's run folder and the ``set`` keys. These are *links*, not
swept keys: they are no ``param:`` columns, so a report still groups a
trial's seeds by the swept values alone. The parent folders follow from the
parent sweep's config, so a rerun links the same runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gemlab.engine.config import ConfigError
from gemlab.storage import Location
from gemlab.tune.space import override

PARENT_FOLDER_KEY = "adapt.parent"


@dataclass(frozen=True)
class ParentStage:
    """The ``sweep.parents`` block: the parent sweep's file, the keys a trial matches on, the keys it sets."""

    sweep: str
    match: tuple[str, ...]
    set: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_block(cls, block: Any) -> ParentStage | None:
        """The block of a composed sweep (None: a one-stage sweep); raises ConfigError naming the bad key."""
        if block is None:
            return None
        if not isinstance(block, Mapping):
            raise ConfigError(f"sweep.parents={block!r}: expected {{sweep: <name>, match: [keys], set: {{...}}}}")
        unknown = sorted(set(block) - {"sweep", "match", "set"})
        if unknown:
            raise ConfigError(f"sweep.parents.{unknown[0]}: not a key of sweep.parents (sweep, match, set)")
        name, match, values = block.get("sweep"), block.get("match"), block.get("set") or {}
        if not isinstance(name, str) or not name:
            raise ConfigError(f"sweep.parents.sweep={name!r}: expected the name of a file of experiments/sweep/")
        if not isinstance(match, list) or not match or not all(isinstance(key, str) for key in match):
            raise ConfigError(f"sweep.parents.match={match!r}: expected a non-empty list of swept keys")
        if not isinstance(values, Mapping) or PARENT_FOLDER_KEY in values:
            raise ConfigError(f"sweep.parents.set={values!r}: expected config keys other than {PARENT_FOLDER_KEY}")
        return cls(name, tuple(match), dict(values))

    def parent_overrides(self, overrides: Sequence[str]) -> list[str]:
        """The command's overrides with the parent sweep's file in place of this one."""
        return [*(o for o in overrides if not o.startswith("sweep=")), f"sweep={self.sweep}"]

    def links(
        self, trials: Sequence[Mapping[str, Any]], parents: Sequence[Mapping[str, Any]], parent_trials: Location
    ) -> dict[int, list[str]]:
        """Trial index -> its overrides: ``adapt.parent`` = the matching parent trial's folder, then ``set``.

        ``parent_trials`` is the parent sweep's ``trials`` folder. Raises ConfigError naming the trial and
        its values when a match key is not swept by both, or when not exactly one parent trial matches.
        """
        from gemlab.tune.sweep import trial_name

        linked = {}
        for index, params in enumerate(trials):
            missing = [key for key in self.match if key not in params]
            if missing:
                raise ConfigError(f"sweep.parents.match: {missing} are not swept by this sweep's space")
            wanted = {key: params[key] for key in self.match}
            found = [i for i, p in enumerate(parents) if all(p.get(key) == value for key, value in wanted.items())]
            if len(found) != 1:
                raise ConfigError(
                    f"sweep.parents: trial {index} {wanted} matches {len(found)} trials of sweep={self.sweep}; "
                    "it needs exactly one"
                )
            folder = parent_trials / trial_name(found[0])
            linked[index] = [override(PARENT_FOLDER_KEY, folder.uri), *(override(k, v) for k, v in self.set.items())]
        return linked
