"""The registry holds Table 14 as data; the shipped mixture agrees with it."""

import yaml

from cauldron.mixture import load_mixture
from cauldron.registry import load_registry

CAULDRON_CONFIGS = """
vqav2 cocoqa visual7w aokvqa tallyqa okvqa hateful_memes vqarad localized_narratives screen2words vsr
rendered_text docvqa textcaps textvqa st_vqa ocrvqa visualmrc iam infographic_vqa diagram_image_to_text
chart2text dvqa vistext chartqa plotqa figureqa mapqa tabmwp tat_qa hitab multihiertt finqa robut_wikisql
robut_sqa robut_wtq geomverse clevr_math clevr iconqa raven intergps ai2d tqa scienceqa nlvr2 mimic_cgd
spot_the_diff websight datikz
""".split()


def test_all_50_subsets_and_9_text_only_sets():
    registry = load_registry()
    assert [info.name for info in registry.cauldron_subsets()] == CAULDRON_CONFIGS
    assert len(registry.text_only_sets()) == 9
    assert all(info.images == 0 for info in registry.text_only_sets())
    assert len(registry.categories) == 10


def test_paper_statistics_spot_checks():
    registry = load_registry()
    vqav2 = registry["vqav2"]
    assert (vqav2.images, vqav2.qa_pairs, vqav2.answer_tokens, vqav2.mixture_percent) == (82772, 443757, 1595929, 5.72)
    hermes = registry["openhermes"]
    assert (hermes.qa_pairs, hermes.answer_tokens, hermes.mixture_percent) == (1006223, 248553747, 12.73)
    assert registry["nlvr2"].category == "two_image_differences" and registry["nlvr2"].family == "yes_no"
    assert registry["datikz"].answer_tokens is None  # not legible in the paper text; never invented
    assert len(registry.by_category("tables")) == 8


def test_mixture_matches_registry_shares():
    registry = load_registry()
    mixture = load_mixture()
    total = sum(info.mixture_percent for info in registry)
    assert abs(total - 100) < 0.05  # Table 14's percentages, rounded
    assert set(mixture.shares) == {info.name for info in registry}
    for info in registry:
        assert abs(mixture.shares[info.name] - info.mixture_percent / total) < 1e-12


def test_registry_file_in_another_place(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "categories": {"general_vqa": "General"},
                "datasets": [
                    {
                        "name": "mine",
                        "paper_name": "Mine",
                        "category": "general_vqa",
                        "family": "short_vqa",
                        "adapter": None,
                        "images": 1,
                        "qa_pairs": 2,
                        "answer_tokens": 3,
                        "mixture_percent": 100,
                    }
                ],
            }
        )
    )
    assert load_registry(path)["mine"].qa_pairs == 2
