"""``nntrain export``: a saved model as a self-contained ONNX file (nntrain.export.onnx)."""

from __future__ import annotations

import click

from .common import debug_option, handle_errors

DEFAULT_OPSET = 22  # = nntrain.export.onnx.DEFAULT_OPSET (not imported: --help stays fast; a test checks)


@click.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True,
              help="ONNX opset (17 or later; before 22 ceil-mode pooling may be refused).")
@click.option("--data", "data_path", type=click.Path(),
              help="Another path for the data set files (the check's test images).")
@click.option("--no-check", is_flag=True, help="Do not compare ONNX Runtime's logits with nntrain's.")
@debug_option
@handle_errors
def export(checkpoint, output, opset, data_path, no_check, debug):
    """Write a saved model (a checkpoint .npz, or a run directory: its best.npz) as ONNX.

    \b
    Input "images": float32 (N, C, H, W), raw values as the data set stores them (0..255
    for the image sets); the run's normalisation is part of the graph. Outputs "logits"
    and "probabilities" (N, K); the class names and the config hash are in the metadata.
    The data set is not needed. With onnxruntime installed the file is run on 100 test images
    (random ones if the data set is not readable here) and compared with nntrain.
    """
    from ..export.onnx import check_export, export_checkpoint

    path, model, exp = export_checkpoint(checkpoint, output, opset=opset, data_path=data_path)
    click.echo(f"wrote {path} (opset {opset}, {len(model.graph.node)} nodes, {path.stat().st_size:,} bytes)")
    if no_check:
        return
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        click.echo("not checked: onnxruntime is not installed (pip install 'nntrain[onnx]')")
        return
    result = check_export(str(path), exp, data_path=data_path)
    click.echo(f"checked: ONNX Runtime matches nntrain on {result['images']} {result['what']} "
               f"(relative difference of the logits {result['relative_error']:.2g})")
