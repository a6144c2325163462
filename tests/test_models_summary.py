"""`python -m models.summary`: the published acceptance figures and error handling."""
import json

import pytest

from models import summary
from models.genotypes import DARTS_V2


def _run_json(capsys, *argv):
    code = summary.main(list(argv) + ["--json"])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)


def test_darts_v2_cifar10_params(capsys):
    result = _run_json(capsys, "--genotype", "DARTS_V2", "--dataset", "cifar10", "--init_channels", "36", "--layers", "20")
    assert result["params_m"] == pytest.approx(3.3, abs=0.05)
    assert result["dataset"] == "cifar10" and result["init_channels"] == 36 and result["layers"] == 20
    assert result["genotype"] == DARTS_V2.to_dict()
    assert result["madds_m"] > 0


def test_darts_v2_imagenet_params_and_madds(capsys):
    result = _run_json(capsys, "--genotype", "DARTS_V2", "--dataset", "imagenet", "--init_channels", "48", "--layers", "14")
    assert result["params_m"] == pytest.approx(4.7, abs=0.1)
    assert result["madds_m"] == pytest.approx(530, rel=0.03)


def test_text_output_and_json_genotype(capsys, tmp_path):
    path = tmp_path / "g.json"
    path.write_text(DARTS_V2.to_json())
    code = summary.main(["--genotype", str(path), "--dataset", "cifar10", "--init_channels", "4", "--layers", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "parameters" in out and "multiply-adds" in out


@pytest.mark.parametrize("bad", ["NO_SUCH_GENOTYPE", '{"normal": [["conv_9x9", 0]], "reduce": []}', "{oops"])
def test_bad_genotype_exits_2(capsys, bad):
    code = summary.main(["--genotype", bad, "--init_channels", "4", "--layers", "3"])
    captured = capsys.readouterr()
    assert code == 2
    assert "error" in captured.err
    assert captured.out == ""


def test_count_madds_restores_training_mode():
    from models.network import Network
    net = Network(DARTS_V2, 4, 10, 3)
    net.train()
    m = summary.count_madds_m(net, 8)
    assert m > 0 and net.training
    net.eval()
    summary.count_madds_m(net, 8)
    assert not net.training


def test_the_mobilenet_space_mobilenet_v2_and_its_genotype_json(capsys, tmp_path):
    result = _run_json(capsys, "--genotype", "MOBILENET_V2", "--dataset", "imagenet")
    assert result["params_m"] == 3.504872 and result["madds_m"] == pytest.approx(300.8, rel=0.01)
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(result["genotype"]))
    assert _run_json(capsys, "--genotype", str(path), "--dataset", "imagenet")["params_m"] == 3.504872
    assert summary.main(["--genotype", '{"space": "mobilenet", "layers": ["skip"]}']) == 2
    assert "searchable layers" in capsys.readouterr().err
