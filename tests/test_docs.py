"""The README and the vendored guide match the code and the source."""

from __future__ import annotations

from pathlib import Path

import pytest

from retailml.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    assert "make run" in first_block
    assert "make test" in first_block


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_readme_documents_every_setting(name: str) -> None:
    assert f"`RETAILML_{name.upper()}`" in (ROOT / "README.md").read_text()


def test_vendored_guide_matches_the_shared_seed() -> None:
    shared = ROOT.parent / "shared" / "seed" / "ML_PIPELINE_GUIDE.md"
    vendored = ROOT / "docs" / "ML_PIPELINE_GUIDE.md"
    if shared.exists():  # the seed sits beside the clone on developer machines and in CI
        assert vendored.read_text() == shared.read_text()
    assert "FeatureEngineeringPipeline" in vendored.read_text()
