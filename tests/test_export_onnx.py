"""ONNX export, checked by ONNX Runtime against nntrain.

Generated from the registry like the gradient checks: every layer type must have a
mapping, and every layer's ``examples`` is exported alone and run by ONNX Runtime against
``Network.forward(x, training=False)``. Then the pieces around the network (normalisation,
evaluation crop), whole networks (a DAG, every shipped config after a few training steps,
on real raw images) and the command line, down to ``nntrain eval``'s test accuracy.
"""

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from nntrain.cli import main  # noqa: E402
from nntrain.config import load_config  # noqa: E402
from nntrain.data import Normalizer, make_augmentation  # noqa: E402
from nntrain.data.augment import center_crop, pad  # noqa: E402
from nntrain.errors import ConfigError  # noqa: E402
from nntrain.experiment import build_experiment  # noqa: E402
from nntrain.export import onnx_layers  # noqa: E402
from nntrain.export.builder import GraphBuilder  # noqa: E402
from nntrain.export.onnx import (DEFAULT_OPSET, add_eval_view, add_network, add_normalization,  # noqa: E402
                                 build_model, export_checkpoint, reference_logits, relative_error, run_onnx)
from nntrain.graph import Network  # noqa: E402
from nntrain.layers.base import to_internal, to_public  # noqa: E402
from nntrain.registry import LAYERS  # noqa: E402
from nntrain.train import Trainer  # noqa: E402

from .conftest import REPO, SHARED_DATA  # noqa: E402
from .test_configs import CONFIGS, _available  # noqa: E402

TOL = 1e-5  # relative error, max |onnx - nntrain| / max |nntrain|
OPSETS = [onnx_layers.MIN_OPSET, DEFAULT_OPSET]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _cases():
    for name, cls in LAYERS.items():
        for k, (options, input_shapes) in enumerate(cls.examples):
            yield pytest.param(name, options, [tuple(s) for s in input_shapes], id=f"{name}-{k}")


def _randomize(params, buffers, rng):
    """Weights and statistics away from their initial values (a BN at mean 0, var 1 tests little)."""
    for p in params:
        p.value[...] = rng.standard_normal(p.value.shape)
    for name, b in buffers:
        b[...] = rng.uniform(0.5, 2.0, b.shape) if name.endswith("var") else rng.standard_normal(b.shape)


def _onnx_and_reference(name, options, input_shapes, opset, rng):
    """(model, inputs, nntrain's eval output) for one layer example.

    One input shape (or several equal ones): a one-layer Network, every input wired to the
    network input, exported by add_network. Different input shapes (concat): the layer
    alone with one graph input per layer input (a Network has one input)."""
    xs = [rng.standard_normal((4, *s)).astype(np.float32) for s in input_shapes]
    if all(s == input_shapes[0] for s in input_shapes):
        net = Network([{"type": name, **options, "inputs": ["input"] * len(input_shapes)}], input_shapes[0])
        _randomize(net.parameters(), net.named_buffers(), rng)
        g = GraphBuilder(opset, reserved=("x0", "y"))
        add_network(g, net, "x0", "y")
        ref, out_shape, feeds = net.forward(xs[0], training=False), net.output_shapes()[0], {"x0": xs[0]}
    else:
        layer = LAYERS.get(name).from_config(dict(options))
        out_shape = layer.build(input_shapes, rng, np.float32)
        _randomize(layer.params().values(), layer.buffers().items(), rng)
        names = [f"x{i}" for i in range(len(xs))]
        g = GraphBuilder(opset, reserved=(*names, "y"))
        onnx_layers.convert_layer(g, layer, names, "y")
        ref = to_public(layer.forward([to_internal(x) for x in xs], False))
        feeds = dict(zip(names, xs))
    model = g.model([(k, ("N", *s)) for k, s in zip(feeds, input_shapes)], [("y", ("N", *out_shape))])
    return model, feeds, ref


def _run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], feeds)[0]


def test_every_registered_layer_has_a_mapping():
    missing = sorted(set(LAYERS.names()) - set(onnx_layers.MAPPINGS))
    assert not missing, f"layer types without an ONNX mapping: {missing}"
    assert not set(onnx_layers.MAPPINGS) - set(LAYERS.names()), "a mapping for a layer type that does not exist"


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name,options,input_shapes", list(_cases()))
def test_layer_example_matches_onnxruntime(name, options, input_shapes, opset):
    model, feeds, ref = _onnx_and_reference(name, options, input_shapes, opset, np.random.default_rng(0))
    onnx.checker.check_model(model, full_check=True)
    got = _run(model, feeds)
    assert got.shape == ref.shape
    err = relative_error(got, ref)
    assert err <= TOL, f"{name} {options} opset {opset}: relative error {err:.3g}"


def test_a_layer_without_mapping_is_an_error_naming_it(monkeypatch):
    monkeypatch.delitem(onnx_layers.MAPPINGS, "relu")
    net = Network([{"type": "linear", "out_features": 3}, {"type": "relu"}], (4,))
    with pytest.raises(ConfigError, match=r"model\[1\] \('relu_1', relu\): layer type 'relu' has no ONNX mapping"):
        add_network(GraphBuilder(DEFAULT_OPSET, reserved=("x", "y")), net, "x", "y")


def test_ceil_mode_pool_whose_last_window_starts_in_the_padding_needs_opset_22():
    """5 + 2*1 padded, kernel 2, stride 2, ceil: nntrain (and PyTorch) 3 outputs, ONNX < 22: 4."""
    options = {"kernel": 2, "stride": 2, "padding": 1, "ceil_mode": True}
    for name in ("maxpool2d", "avgpool2d"):
        with pytest.raises(ConfigError, match="--opset 22"):
            _onnx_and_reference(name, options, [(2, 5, 5)], 21, np.random.default_rng(0))
        model, feeds, ref = _onnx_and_reference(name, options, [(2, 5, 5)], 22, np.random.default_rng(0))
        onnx.checker.check_model(model, full_check=True)
        assert ref.shape == (4, 2, 3, 3)
        assert relative_error(_run(model, feeds), ref) <= TOL


@pytest.mark.parametrize("opset", OPSETS)
def test_dag_network_with_branches_and_reshapes(opset):
    """Fan-out, add, concat of images and of vectors, reshape between ranks (public order)."""
    spec = [
        {"name": "a", "type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1},
        {"name": "b", "type": "conv2d", "out_channels": 4, "kernel": 1, "inputs": "input"},
        {"name": "sum", "type": "add", "inputs": ["a", "b", "input"]},
        {"name": "cat", "type": "concat", "inputs": ["sum", "a"]},
        {"type": "batchnorm2d"},
        {"type": "gelu", "approximate": "tanh"},
        {"name": "flat", "type": "flatten"},
        {"name": "img", "type": "reshape", "shape": [2, -1, 5], "inputs": "flat"},
        {"name": "pooled", "type": "global_avgpool"},
        {"name": "fc", "type": "linear", "out_features": 6, "inputs": "flat"},
        {"name": "vec", "type": "concat", "inputs": ["fc", "pooled"]},
        {"type": "layernorm"},
        {"type": "linear", "out_features": 3},
    ]
    net = Network(spec, (4, 5, 5))
    rng = np.random.default_rng(1)
    _randomize(net.parameters(), net.named_buffers(), rng)
    g = GraphBuilder(opset, reserved=("x", "y"))
    add_network(g, net, "x", "y")
    model = g.model([("x", ("N", 4, 5, 5))], [("y", ("N", 3))])
    onnx.checker.check_model(model, full_check=True)
    x = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)
    assert relative_error(_run(model, {"x": x}), net.forward(x, training=False)) <= TOL


def _subgraph_model(add, shape_in, shape_out):
    g = GraphBuilder(DEFAULT_OPSET, reserved=("x", "y"))
    g.op("Identity", [add(g, "x")], "y")
    model = g.model([("x", ("N", *shape_in))], [("y", ("N", *shape_out))])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("spec", ["per_channel", "per_pixel_mean", "scale", "none",
                                  {"type": "zca", "samples": 200}, {"type": "pca", "epsilon": 0.1}])
def test_normalization_in_the_graph(spec):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (300, 3, 4, 5), dtype=np.uint8)
    normalizer = Normalizer.fit(spec, images)
    model = _subgraph_model(lambda g, x: add_normalization(g, normalizer, x), (3, 4, 5), (3, 4, 5))
    raw = images[:7].astype(np.float32)
    assert relative_error(_run(model, {"x": raw}), normalizer.apply(images[:7])) <= TOL


@pytest.mark.parametrize("augment,expected", [
    ([{"type": "random_crop", "size": 24}], lambda x: center_crop(x, 24)),  # 28 -> centre 24
    ([{"type": "random_crop", "size": [30, 26], "padding": 2}], lambda x: center_crop(pad(x, 2), (30, 26))),
    ([{"type": "hflip"}, {"type": "random_crop", "size": 31, "padding": 2, "pad_mode": "reflect"}],
     lambda x: center_crop(pad(x, 2, "reflect"), 31)),
])
def test_evaluation_view_in_the_graph(augment, expected):
    pipeline = make_augmentation(augment)
    x = np.random.default_rng(3).standard_normal((3, 2, 28, 28)).astype(np.float32)
    ref = expected(x)
    model = _subgraph_model(lambda g, name: add_eval_view(g, pipeline, (2, 28, 28), name), (2, 28, 28), ref.shape[1:])
    np.testing.assert_array_equal(_run(model, {"x": x}), ref)


def test_an_identity_evaluation_view_adds_nothing():
    g = GraphBuilder(DEFAULT_OPSET)
    assert add_eval_view(g, make_augmentation([{"type": "translate", "max_shift": 2}]), (1, 28, 28), "x") == "x"
    assert not g.nodes


def test_an_evaluation_transform_that_computes_cannot_be_exported():
    class Brighten:
        def eval_transform(self, x):
            return x * 2.0

    with pytest.raises(ConfigError, match="not a selection of pixels"):
        add_eval_view(GraphBuilder(DEFAULT_OPSET), Brighten(), (1, 4, 4), "x")


# ----- whole models, real data -------------------------------------------------------------------
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_exports_and_matches_on_real_images(path, tmp_path, monkeypatch):
    """A few training steps (batch-norm statistics and weights away from their initial values),
    then the network exported and run on raw test images, normalisation included."""
    monkeypatch.setenv("NNTRAIN_DATA", str(SHARED_DATA))
    if not _available(load_config(path)):
        pytest.skip(f"data for {path.stem} not available here")
    overrides = ["data.limit={train: 300, val: 100, test: 100}", "train.max_iterations=3", "eval.batch_size=100",
                 "train.batch_size=32"]
    if load_config(path)["data"]["validation"]:
        overrides.append("data.validation=100")
    exp = build_experiment(load_config(path, overrides))
    Trainer(exp, tmp_path / "run", quiet=True).run()
    model = build_model(exp, {})  # the trained experiment (the checkpoint route: the quickstart tests)
    raw = exp.data.test.x[:50]
    logits, proba = run_onnx(model, raw)
    err = relative_error(logits, reference_logits(exp, raw))
    assert err <= TOL, f"{path.stem}: relative error {err:.3g}"
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """A shortened quickstart run (60 iterations: ~80% test accuracy, a few seconds)."""
    run_dir = tmp_path_factory.mktemp("export") / "quickstart"
    r = run("fit", REPO / "configs" / "quickstart.yaml", "--set", "train.max_iterations=60",
            "--run-dir", run_dir, "--quiet")
    assert r.exit_code == 0, r.output
    return run_dir


def test_quickstart_onnx_accuracy_equals_nntrain_eval(quickstart_run, tmp_path):
    out = tmp_path / "model.onnx"
    r = run("export", quickstart_run, "-o", out)
    assert r.exit_code == 0, r.output
    assert "checked: ONNX Runtime matches nntrain on 100 test images" in r.output
    r = run("eval", quickstart_run, "--json")
    assert r.exit_code == 0, r.output
    evaluated = json.loads(r.output)
    from nntrain.evaluate import load_model

    exp, _ = load_model(quickstart_run)
    test = exp.data.test
    _, proba = run_onnx(out, test.x)  # the raw uint8 test images, as float32
    accuracy = float(np.mean(proba.argmax(axis=1) == test.y))
    assert evaluated["n"] == len(test) == 2000
    assert accuracy == evaluated["accuracy"]
    assert 0.5 < accuracy < 1.0


def test_metadata_names_classes_config_and_input(quickstart_run, tmp_path):
    from nntrain.rundir import Checkpoint, resolve_checkpoint

    export_checkpoint(quickstart_run, tmp_path / "m.onnx", opset=onnx_layers.MIN_OPSET)
    model = onnx.load(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    ckpt = Checkpoint(resolve_checkpoint(quickstart_run))
    assert json.loads(meta["classes"]) == ckpt.meta["classes"] == [str(i) for i in range(10)]
    assert meta["config_hash"] == ckpt.meta["config_hash"]
    assert meta["input_layout"] == "NCHW" and json.loads(meta["input_shape"]) == [1, 28, 28]
    assert "0..255" in meta["input_scale"] and meta["normalization"].startswith("per_channel")
    assert model.opset_import[0].version == onnx_layers.MIN_OPSET
    assert [o.name for o in model.graph.output] == ["logits", "probabilities"]


@pytest.mark.parametrize("opset", ["16", "99"])
def test_bad_opset_exits_2(quickstart_run, tmp_path, opset):
    r = run("export", quickstart_run, "-o", tmp_path / "m.onnx", "--opset", opset)
    assert r.exit_code == 2 and r.output.startswith("error: ") and "--opset" in r.output, r.output
    assert not (tmp_path / "m.onnx").exists()


def test_without_onnx_the_command_says_how_to_install(quickstart_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    r = run("export", quickstart_run, "-o", tmp_path / "m.onnx")
    assert r.exit_code == 2, r.output
    assert "pip install 'nntrain[onnx]'" in r.output and "Traceback" not in r.output


def test_cli_default_opset_is_the_library_default():
    from nntrain.cli import export as cli_export

    assert cli_export.DEFAULT_OPSET == DEFAULT_OPSET


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_export_needs_no_data_set(tmp_path, monkeypatch, dtype):
    """The checkpoint describes its data (classes, shape, dtype): a model exports (and is
    checked on random images in the data's range) and its filters are drawn where the data
    file is gone; eval says the file is missing."""
    import yaml

    from .conftest import TINY

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (120, 1, 12, 12)).astype(dtype)
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 3, 120), classes=np.array(["a", "b", "c"]))
    cfg = {**TINY, "data": {"dataset": "npz", "path": "d.npz", "validation": 0, "normalize": "per_channel"},
           "model": TINY["model"][:-1] + [{"type": "linear", "out_features": 3}],
           "train": {"epochs": 1, "batch_size": 40}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert run("fit", "c.yaml", "--run-dir", "r", "--quiet").exit_code == 0
    with_data = run("export", "r", "-o", "with.onnx")
    assert with_data.exit_code == 0 and "on 100 training images" in with_data.output, with_data.output
    (tmp_path / "d.npz").unlink()
    r = run("export", "r", "-o", "m.onnx")
    assert r.exit_code == 0, r.output
    assert "checked: ONNX Runtime matches nntrain on 100 random images (the data set is not readable here" in r.output
    model = onnx.load("m.onnx")
    assert json.loads({p.key: p.value for p in model.metadata_props}["classes"]) == ["a", "b", "c"]
    logits, _ = run_onnx(model, x[:5])
    assert np.allclose(logits, run_onnx("with.onnx", x[:5])[0], rtol=1e-6, atol=1e-6)
    pytest.importorskip("matplotlib")
    r = run("plot", "r", "--filters", "-o", "f.png")  # the weights only: no data needed either
    assert r.exit_code == 0 and (tmp_path / "f.png").stat().st_size > 0, r.output
    r = run("eval", "r")
    assert r.exit_code == 2 and "d.npz" in r.output, r.output


def test_a_malformed_data_description_is_a_checkpoint_error(quickstart_run, tmp_path):
    from nntrain.errors import CheckpointError
    from nntrain.evaluate import checkpoint_data
    from nntrain.rundir import Checkpoint, resolve_checkpoint

    ckpt = Checkpoint(resolve_checkpoint(quickstart_run))
    assert checkpoint_data(ckpt).input_shape == (1, 28, 28)
    for key, bad in (("data_dtype", "float16"), ("data_shape", [1, -28, 28]), ("classes", "0123456789"),
                     ("data_shape", [1, 28])):
        ckpt.meta = {**Checkpoint(resolve_checkpoint(quickstart_run)).meta, key: bad}
        with pytest.raises(CheckpointError, match=rf"not a valid nntrain checkpoint: its metadata: .*{key}"):
            checkpoint_data(ckpt)
    del ckpt.meta["data_dtype"]  # written before the dtype was recorded: the data is read
    assert checkpoint_data(ckpt) is None
