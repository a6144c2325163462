"""Genotype values, validation, JSON, weight parsing and loading."""
import json

import pytest
import torch

from models.genotypes import (DARTS_V1, DARTS_V2, PC_DARTS, PRIMITIVES_DARTS, PRIMITIVES_ISTA, PUBLISHED,
                              Genotype, genotype_from_dict, load_genotype, parse_weights)

PUBLISHED_LIST = [DARTS_V1, DARTS_V2, PC_DARTS]


@pytest.mark.parametrize("geno", PUBLISHED_LIST, ids=["DARTS_V1", "DARTS_V2", "PC_DARTS"])
def test_published_genotypes_round_trip_through_dict(geno):
    back = genotype_from_dict(geno.to_dict())
    assert isinstance(back, Genotype)
    assert back == geno
    assert len(geno.normal) == len(geno.reduce) == 8


@pytest.mark.parametrize("geno", PUBLISHED_LIST, ids=["DARTS_V1", "DARTS_V2", "PC_DARTS"])
def test_published_genotypes_round_trip_through_json(geno):
    text = geno.to_json()
    assert json.loads(text) == geno.to_dict()
    assert genotype_from_dict(json.loads(text)) == geno


def test_published_names_point_to_the_genotypes():
    assert PUBLISHED["DARTS_V2"] is DARTS_V2
    assert PUBLISHED["DARTS"] == DARTS_V2
    assert PUBLISHED["PC_DARTS"] == PC_DARTS


def test_count_counts_ops_per_cell():
    assert DARTS_V2.count("sep_conv_3x3") == 5
    assert DARTS_V2.count("max_pool_3x3", "reduce") == 5
    assert DARTS_V2.count("max_pool_3x3") == 0


def test_concat_defaults_to_all_intermediate_nodes():
    d = DARTS_V2.to_dict()
    del d["normal_concat"], d["reduce_concat"]
    g = genotype_from_dict(d)
    assert g.normal_concat == [2, 3, 4, 5] and g.reduce_concat == [2, 3, 4, 5]


def _mutated(cell, k, entry):
    d = DARTS_V2.to_dict()
    d[cell][k] = entry
    return d


@pytest.mark.parametrize("d", [
    _mutated("normal", 0, ["conv_7x7", 0]),          # unknown op
    _mutated("reduce", 3, ["none", 1]),              # `none` is not a real op
    _mutated("normal", 0, ["sep_conv_3x3", 2]),      # node 0 only sees states 0 and 1
    _mutated("normal", 7, ["sep_conv_3x3", 5]),      # node 3 sees states 0..4
    _mutated("reduce", 2, ["sep_conv_3x3", -1]),     # negative input
    {**DARTS_V2.to_dict(), "normal": DARTS_V2.to_dict()["normal"][:7]},   # odd length
    {**DARTS_V2.to_dict(), "reduce": DARTS_V2.to_dict()["reduce"][:6]},   # cells differ in length
    {"normal": [["sep_conv_3x3", "x"], ["sep_conv_3x3", 0]], "reduce": []},  # non-int input
    {"reduce": DARTS_V2.to_dict()["reduce"]},        # missing cell
    {"normal": [["sep_conv_3x3"]], "reduce": [["sep_conv_3x3"]]},  # malformed pair
], ids=["unknown-op", "none", "input-out-of-range", "input-out-of-range-last", "negative-input",
        "odd-length", "length-mismatch", "non-int", "missing-key", "malformed-pair"])
def test_invalid_genotypes_raise_value_error(d):
    with pytest.raises(ValueError):
        genotype_from_dict(d)


def test_largest_valid_input_index_is_accepted():
    # node k (0-based) may take any of the states 0 .. k+1
    g = genotype_from_dict(_mutated("normal", 7, ["sep_conv_3x3", 4]))
    assert g.normal[7] == ("sep_conv_3x3", 4)


# --- parse_weights ----------------------------------------------------------------------------

def _weights(steps, n_ops, entries, fill=0.01):
    """[n_edges, n_ops] filled with `fill`, with {(edge, op): value} overrides."""
    n_edges = sum(i + 2 for i in range(steps))
    w = torch.full((n_edges, n_ops), fill)
    for (e, k), v in entries.items():
        w[e, k] = v
    return w


def test_parse_weights_picks_two_strongest_edges_and_strongest_op():
    P = PRIMITIVES_DARTS
    # steps=2: node 0 edges 0,1; node 1 edges 2,3,4
    w = _weights(2, len(P), {
        (0, P.index("sep_conv_3x3")): 0.5,
        (1, P.index("max_pool_3x3")): 0.3,
        (2, P.index("skip_connect")): 0.2,      # weakest of node 1
        (3, P.index("dil_conv_5x5")): 0.6,
        (4, P.index("avg_pool_3x3")): 0.4,
    })
    gene = parse_weights(w, P, steps=2)
    assert gene == [("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("dil_conv_5x5", 1), ("avg_pool_3x3", 2)]


def test_parse_weights_never_picks_none_even_if_largest():
    P = PRIMITIVES_DARTS
    none = P.index("none")
    w = _weights(2, len(P), {
        (0, none): 10.0, (0, P.index("sep_conv_5x5")): 0.2,
        (1, none): 10.0, (1, P.index("avg_pool_3x3")): 0.3,
        (2, none): 10.0, (2, P.index("skip_connect")): 0.05,   # `none` must not make edge 2 strong
        (3, P.index("dil_conv_3x3")): 0.4,
        (4, P.index("sep_conv_3x3")): 0.5,
    })
    gene = parse_weights(w, P, steps=2)
    assert all(op != "none" for op, _ in gene)
    assert gene == [("sep_conv_5x5", 0), ("avg_pool_3x3", 1), ("dil_conv_3x3", 1), ("sep_conv_3x3", 2)]


def test_parse_weights_absolute_flag_changes_ranking_of_negative_values():
    P = PRIMITIVES_ISTA
    # steps=2; node 1 has edges 2, 3, 4 (inputs 0, 1, 2)
    w = _weights(2, len(P), {
        (0, P.index("max_pool_3x3")): 0.1, (1, P.index("avg_pool_3x3")): 0.1,
        (2, P.index("sep_conv_3x3")): -0.9,     # strongest by magnitude, weakest by sign
        (2, P.index("max_pool_3x3")): 0.2,      # ... and this is the best signed op on that edge
        (3, P.index("skip_connect")): 0.5,
        (4, P.index("dil_conv_3x3")): 0.4,
    }, fill=0.0)
    node1_abs = parse_weights(w, P, steps=2, absolute=True)[2:]
    node1_signed = parse_weights(w, P, steps=2, absolute=False)[2:]
    assert node1_abs == [("sep_conv_3x3", 0), ("skip_connect", 1)]
    assert node1_signed == [("skip_connect", 1), ("dil_conv_3x3", 2)]
    # signed ranking, but on an edge where negative values lose, the best positive op is picked
    w[4] = 0.0
    assert parse_weights(w, P, steps=2, absolute=False)[2:] == [("max_pool_3x3", 0), ("skip_connect", 1)]


def test_parse_weights_output_is_a_valid_genotype_for_random_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(14, len(PRIMITIVES_DARTS), generator=g)
    gene = parse_weights(w, PRIMITIVES_DARTS, steps=4)
    geno = genotype_from_dict({"normal": gene, "reduce": gene})
    assert len(geno.normal) == 8
    for node in range(4):
        a, b = gene[2 * node][1], gene[2 * node + 1][1]
        assert a < b  # two different edges, sorted


# --- load_genotype ----------------------------------------------------------------------------

def test_load_genotype_by_name():
    assert load_genotype("DARTS_V1") == DARTS_V1
    assert load_genotype("PC_DARTS") == PC_DARTS


def test_load_genotype_from_json_string():
    assert load_genotype(PC_DARTS.to_json()) == PC_DARTS
    assert load_genotype("  " + DARTS_V1.to_json()) == DARTS_V1


def test_load_genotype_from_file(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(DARTS_V1.to_json())
    assert load_genotype(str(path)) == DARTS_V1


@pytest.mark.parametrize("text", ["NOT_A_GENOTYPE", "{not json", '{"normal": [["conv_9x9", 0]]}', "/no/such/file.json"])
def test_load_genotype_rejects_garbage(text):
    with pytest.raises(ValueError):
        load_genotype(text)


def test_load_genotype_rejects_garbage_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("this is not json")
    with pytest.raises(ValueError):
        load_genotype(str(path))
