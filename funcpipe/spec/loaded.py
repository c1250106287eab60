"""`LoadedSpec`: a validated spec with every reference resolved, ready to compile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from funcpipe.adapters.config import AdapterConfig
from funcpipe.policy.models import NO_POLICY, Policy
from funcpipe.registry import AdapterKind, StageKind
from funcpipe.spec.models import PipelineSpec
from funcpipe.stages.config import StageConfig


@dataclass(frozen=True)
class LoadedSpec:
    """What `load_spec` returns when a spec is valid.

    Attributes:
        spec: the document model.
        path: the spec file (``<string>`` for specs given as text).
        base_dir: directory that relative paths in the spec are resolved against.
        adapters: each adapter's validated config, by adapter name.
        stage_configs: each stage's validated ``with:`` config, by stage id.
        stage_policies: each stage's resolved policy (NO_POLICY if none), by stage id.
        inputs: each stage's input stage ids (empty for sources), by stage id.
        stage_kinds: each stage's registered kind, by stage id.
        adapter_kinds: each adapter's registered kind, by adapter name.
        order: the stage ids in topological order (inputs first).
        query_policy: the query's resolved policy (NO_POLICY if none).
        fingerprint: sha256 of the canonical, fully-rendered document.
        text: the raw file text.
    """

    spec: PipelineSpec
    path: Path
    base_dir: Path
    adapters: dict[str, AdapterConfig]
    stage_configs: dict[str, StageConfig]
    stage_policies: dict[str, Policy]
    inputs: dict[str, tuple[str, ...]]
    stage_kinds: dict[str, StageKind]
    adapter_kinds: dict[str, AdapterKind]
    order: tuple[str, ...]
    fingerprint: str
    query_policy: Policy = NO_POLICY
    text: str = ""

    def policy_of(self, stage_id: str) -> Policy:
        """The resolved policy of a stage."""
        return self.stage_policies.get(stage_id, NO_POLICY)

    @property
    def state_dir(self) -> Path:
        """``.funcpipe/`` beside the spec file."""
        return self.base_dir / ".funcpipe"
