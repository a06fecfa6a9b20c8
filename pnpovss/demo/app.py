"""The Gradio page of ``pnpovss demo``: layout and event wiring around a :class:`DemoEngine`.

Gradio is imported here only, so the core package and ``pnpovss --help`` never need it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

from ..datasets.base import CLASSNAMES_DIR, read_classnames
from ..errors import PnpOvssError
from ..result import BACKGROUND
from .engine import PAGE_WORKING_SIDE, PICTURE_FORMAT, DemoEngine, segment_kwargs, upload_name

OWN_WORDS = "(type your own)"
EXAMPLE_IMAGE = Path(__file__).resolve().parents[2] / "examples" / "shapes.png"


def vocabularies() -> dict[str, str]:
    """Vocabulary name -> comma-separated class list, from the dataset class files and the toy world."""
    from ..toyworld.world import SHAPES

    vocab = {"toyworld": ", ".join(SHAPES)}
    for path in sorted(CLASSNAMES_DIR.glob("*.txt")):
        names = [syn[0] for syn in read_classnames(path) if syn[0].lower() != BACKGROUND]
        vocab[path.stem] = ", ".join(names)
    return vocab


def example_inputs(folder: Path) -> list[list[str]]:
    """(image, classes) examples: the README's ``examples/shapes.png`` when this is a source checkout,
    three toy-world images (seed 3, an example-only seed) and one of each shape world's, and plain shapes
    drawn with PIL (a disc, a square and a triangle on noisy grey: what only the shape world's model
    finds), written to ``folder``."""
    from PIL import Image

    from ..toyworld.drawings import DRAWN_SHAPES, drawn_row
    from ..toyworld.world import make_sample

    rows = [[str(EXAMPLE_IMAGE), "circle, star"]] if EXAMPLE_IMAGE.is_file() else []
    drawn = folder / "drawn-shapes.png"
    Image.fromarray(drawn_row(size=128)[0]).save(drawn)
    rows.append([str(drawn), ", ".join(shape for shape, _ in DRAWN_SHAPES)])
    for world, index in (("toyworld", 0), ("toyworld", 1), ("toyworld", 2), ("toyworld-shapes", 0)):
        sample = make_sample(3, index, world=world)
        path = folder / f"{world}-3-{index}.png"
        Image.fromarray(sample.image).save(path)
        rows.append([str(path), ", ".join(sample.labels)])
    return rows


def _lenient(component: Any) -> Any:
    """Let uploads that Gradio's image decoding rejects through as paths, so our loader reports them
    with the CLI's message instead of Gradio's generic one. (Wrapping this one instance: a
    ``gr.Image`` subclass would make Gradio write a ``.pyi`` stub into our package.)"""
    strict = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return strict(payload)
        except Exception:  # noqa: BLE001 - any decode failure is reported by load_image
            return None if payload is None else payload.path

    component.preprocess = preprocess
    return component


def _gradio() -> Any:
    try:
        import gradio
    except ImportError:
        raise PnpOvssError('the demo needs Gradio: pip install "pnpovss[demo]"') from None
    return gradio


_START_CLOCK = "(...inputs) => { window.pnpovssAsked = performance.now(); return inputs; }"
"""Runs in the browser as a request is sent: notes the time and passes the inputs on unchanged."""
_WAITED = ("(status) => window.pnpovssAsked === undefined ? status : status + '; you waited ' + "
           "((performance.now() - window.pnpovssAsked) / 1000).toFixed(2) + ' s'")
"""After an answer is shown: the status line adds the time the visitor waited, measured in the browser."""
_FAILED = "() => 'The last request failed (the message says why); the results below are from the one before.'"
"""After an error: the status line no longer reports the previous answer as if it were this one."""


def _handlers(engine: DemoEngine, gr: Any) -> tuple[Callable, Callable, Callable]:
    """The page's three answers: ``answer`` (Segment), ``live`` (a post-processing control moved)
    and ``api_segment`` (the programmatic endpoint)."""

    def answer(image: str | None, classes: str, layer, head, drop_iters, drop_k, halving, threshold, blur_sigma,
               crf, presence, presence_threshold, working_side, progress=gr.Progress()):
        try:
            kwargs = segment_kwargs(layer, head, drop_iters, drop_k, halving, threshold, blur_sigma, crf, presence,
                                    presence_threshold, working_side)
            out = engine.run(image, classes, name=upload_name(image),
                             progress=lambda desc: progress(0.0, desc=desc), **kwargs)
        except PnpOvssError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return (
            gr.AnnotatedImage(value=(out.shown().image, out.masks()), color_map=out.colours(), format=PICTURE_FORMAT),
            out.heatmaps(),
            gr.Dataframe(value=out.table(), headers=out.table_headers()),
            [str(p) for p in out.files],
            out.status(),
            "\n".join(f"* {note}" for note in out.notes()),
        )

    def live(image, classes, layer, head, drop_iters, drop_k, halving, threshold, blur_sigma, crf, presence,
             presence_threshold, working_side, progress=gr.Progress()):
        """Post-processing controls: answer only once a picture is there (maps come from the cache)."""
        if image is None:
            return (gr.skip(),) * 6
        return answer(image, classes, layer, head, drop_iters, drop_k, halving, threshold, blur_sigma, crf, presence,
                      presence_threshold, working_side, progress)

    def api_segment(image: str | None, classes: str) -> tuple[str, dict]:
        try:
            out = engine.run(image, classes, name=upload_name(image))
        except PnpOvssError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        overlay = out.files[0].with_name(Path(out.name).stem + ".overlay.png")
        out.result.overlay().save(overlay)
        return str(overlay), out.record

    return answer, live, api_segment


def _controls(engine: DemoEngine, gr: Any, vocab: dict[str, str]) -> SimpleNamespace:
    """The left column: image, vocabulary, classes, presence, and the map and post-processing knobs."""
    cfg = engine.seg.config
    head_text = "mean" if cfg.head is None else ",".join(str(h) for h in cfg.heads_tuple() or ())
    c = SimpleNamespace()
    c.image = _lenient(gr.Image(type="filepath", label="Image (drop, paste or upload)",
                                sources=["upload", "clipboard"], elem_id="input-image"))
    c.vocabulary = gr.Dropdown([OWN_WORDS, *vocab], value=OWN_WORDS, label="Vocabulary")
    c.classes = gr.Textbox(label="Classes (comma-separated)", placeholder="circle, star", elem_id="classes")
    with gr.Row():
        c.presence = gr.Checkbox(True, label="presence filter: segment only the classes the model finds",
                                 elem_id="presence")
        c.presence_threshold = gr.Slider(0.0, 1.0, cfg.presence_threshold, step=0.01,
                                         label="presence threshold (ITM probability)", elem_id="presence-threshold")
    c.run = gr.Button("Segment", variant="primary", elem_id="run")
    with gr.Accordion("Maps: GradCAM and Salience DropOut (recomputed)", open=True):
        c.layer = gr.Number(cfg.layer, precision=0, label=f"layer (1..{engine.seg.backbone.num_layers})",
                            elem_id="layer")
        c.head = gr.Textbox(head_text, label=f"head (0..{engine.seg.backbone.num_heads - 1}, comma list, or mean)")
        c.drop_iters = gr.Slider(1, 8, cfg.drop_iters, step=1, label="DropOut passes T")
        c.drop_k = gr.Number(cfg.drop_k, precision=0, label="patches dropped per pass k")
        c.halving = gr.Checkbox(cfg.halving, label="halving (drop half the remaining patches instead of k)")
    with gr.Accordion("Post-processing (live, reuses the maps)", open=True):
        c.threshold = gr.Slider(0.0, 0.95, cfg.threshold, step=0.01, label="threshold", elem_id="threshold")
        c.blur_sigma = gr.Slider(0.005, 0.2, cfg.blur_sigma, step=0.005, label="blur sigma (x image size)")
        c.crf = gr.Checkbox(cfg.crf, label="dense CRF")
        c.working_side = gr.Slider(128, 2048, PAGE_WORKING_SIDE, step=64, elem_id="working-side",
                                   label="working size (px): blur and CRF of a larger picture run at this long side")
    return c


def _results(gr: Any) -> list[Any]:
    """The right column, in the order the answers fill it: overlay, heat maps, table, downloads,
    status, presence notes."""
    status = gr.Markdown("Upload an image, type classes, press Segment.", elem_id="status")
    overlay = gr.AnnotatedImage(label="Segmentation (click a legend entry to highlight it)", elem_id="overlay",
                                format=PICTURE_FORMAT)
    table = gr.Dataframe(headers=["label", "pixels %"], label="Classes", interactive=False, elem_id="classes-table")
    notes = gr.Markdown("", elem_id="presence-notes")  # why the kept classes differ from the threshold's
    heatmaps = gr.Gallery(label="Per-label score maps", columns=4, height=260, format=PICTURE_FORMAT)
    files = gr.File(label="Downloads (as pnpovss segment writes them)", file_count="multiple", elem_id="downloads")
    return [overlay, heatmaps, table, files, status, notes]


def build_app(engine: DemoEngine) -> Any:
    """The page (``gr.Blocks``); ``launch()`` it, or use :func:`serve`."""
    gr = _gradio()
    vocab = vocabularies()
    examples_dir = engine.out_dir / "examples"  # removed with the engine's folder
    examples_dir.mkdir(exist_ok=True)
    answer, live, api_segment = _handlers(engine, gr)
    with gr.Blocks(title="pnpovss demo") as app:
        gr.Markdown(f"## PnP-OVSS: open-vocabulary segmentation\nModel: **{engine.describe()}**",
                    elem_id="model-line")
        with gr.Row():
            with gr.Column(scale=1):
                c = _controls(engine, gr, vocab)
            with gr.Column(scale=2):
                outputs = _results(gr)
        gr.Examples(example_inputs(examples_dir), inputs=[c.image, c.classes])
        with gr.Row(visible=False):  # the programmatic endpoint: exactly (image, classes) -> (overlay, JSON)
            api_image = _lenient(gr.Image(type="filepath"))
            api_classes = gr.Textbox()
            api_overlay = gr.Image(type="filepath", format="png")
            api_json = gr.JSON()
            api_button = gr.Button()
        knobs = [c.layer, c.head, c.drop_iters, c.drop_k, c.halving, c.threshold, c.blur_sigma, c.crf, c.presence,
                 c.presence_threshold, c.working_side]
        c.vocabulary.change(lambda v: gr.skip() if v == OWN_WORDS else vocab[v], c.vocabulary, c.classes,
                            api_visibility="private")
        asked = gr.on([c.run.click, c.classes.submit], answer, [c.image, c.classes, *knobs], outputs, api_name="run",
                      concurrency_id="model", js=_START_CLOCK)
        changed = gr.on([c.threshold.change, c.blur_sigma.change, c.crf.change, c.working_side.change], live,
                        [c.image, c.classes, *knobs], outputs, api_visibility="private", concurrency_id="model", trigger_mode="always_last",
                        show_progress="minimal", js=_START_CLOCK)
        for event in (asked, changed):  # the browser's own clock: upload, queue and picture transfer included
            event.success(None, [outputs[4]], [outputs[4]], js=_WAITED, api_visibility="private")
            event.failure(None, None, [outputs[4]], js=_FAILED, api_visibility="private")
        api_button.click(api_segment, [api_image, api_classes], [api_overlay, api_json], api_name="segment",
                         concurrency_id="model")
    app.queue(default_concurrency_limit=1)  # one model instance: requests wait their turn
    return app


def serve(model: str, *, host: str = "127.0.0.1", port: int = 7860, device: str = "auto", dtype: str | None = None,
          on_load: Callable[[Any], None] | None = None) -> None:
    """Load ``model`` once (on ``device``, in ``dtype``: the pipeline's default when None) and
    serve the page until interrupted; ``on_load`` gets the loaded Segmenter (the CLI says there
    which device and precision run)."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls
    gr = _gradio()
    from ..pipeline import Segmenter

    seg = Segmenter.from_pretrained(model, device=device, **({} if dtype is None else {"dtype": dtype}))
    if on_load is not None:
        on_load(seg)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web-font download: works offline
    with DemoEngine(seg, model) as engine, _terminate_as_exit():  # its folder goes on every way out
        app = build_app(engine)
        try:
            app.launch(server_name=host, server_port=port, theme=theme, show_error=True,
                       allowed_paths=[str(engine.out_dir)])
        except OSError as exc:  # Gradio's "Cannot find empty port" and socket errors
            why = "the port is in use" if "empty port" in str(exc) else str(exc).splitlines()[0]
            raise PnpOvssError(f"cannot serve on {host}:{port} ({why}); pass a free --port") from None


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM (``kill``, a service manager) ends the process through ``SystemExit`` inside the
    block, so that ``finally`` and ``with`` exits run as they do on Ctrl-C; restored after."""
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
