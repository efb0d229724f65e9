"""The web export: a static folder whose page generates in the browser, offline.

    out_dir/index.html            the page: prompt, controls, Generate, the text
    out_dir/tfchargen.mjs         the host loop (export/js/tfchargen.mjs, the same file)
    out_dir/tf.fesm.min.js        TensorFlow.js's ES module bundle (its license in its header)
    out_dir/model.json, *.bin     the step model (tfjs.write)
    out_dir/manifest.json         runtime "web"

Any static file server works (``python -m http.server -d DIR``); browsers refuse ES modules
from ``file://`` URLs, so opening index.html from disk does not. The page imports
'@tensorflow/tfjs' through an import map pointing at the bundle beside it, as Node resolves
the same import from node_modules.

The bundle is copied from the npm package that ``npm ci --prefix export/js`` installs (the
version export/js/package-lock.json pins, the one the Node command runs): a third party's
build output stays out of this repository and its wheel.
"""

from __future__ import annotations

import os
import shutil

from tfchargen.portable import tfjs

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web_assets")
# Copied as they are; tfchargen.mjs in ASSETS is a link to export/js/tfchargen.mjs in a
# checkout, and the file itself in a built wheel.
FILES = ("index.html", "tfchargen.mjs")
BUNDLE = "tf.fesm.min.js"
# Where `npm ci --prefix export/js` puts TensorFlow.js, in the checkout this package runs from.
TFJS_DIST = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(ASSETS))),
                         "export", "js", "node_modules", "@tensorflow", "tfjs", "dist")


def write(out_dir, model, manifest: dict) -> dict:
    """Writes the web export of ``model`` into ``out_dir`` (created if needed).

    Args:
        out_dir: the export folder.
        model: a ``numeric.StepModel`` (``numeric.load(run_dir)``).
        manifest: ``manifest.build(model, "web")``; written as ``out_dir/manifest.json``.

    Returns:
        ``manifest`` as written.

    Raises:
        FileNotFoundError: a page file is missing from the installed package, or TensorFlow.js's
            bundle from export/js/node_modules (run ``npm ci --prefix export/js``).
        tfjs.UnsupportedOpError: as tfjs.write.
    """
    missing = [name for name in FILES if not os.path.isfile(os.path.join(ASSETS, name))]
    if missing:
        raise FileNotFoundError(f"the web page's files are missing from {ASSETS}: {', '.join(missing)} "
                                "(reinstall tfchargen)")
    bundle = os.path.join(TFJS_DIST, BUNDLE)
    if not os.path.isfile(bundle):
        raise FileNotFoundError(f"the web export needs TensorFlow.js's browser bundle, {bundle} is missing: run "
                                "`npm ci --prefix export/js` in the tfchargen checkout")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    for name in FILES:
        shutil.copyfile(os.path.join(ASSETS, name), os.path.join(out_dir, name))  # follows the link
    shutil.copyfile(bundle, os.path.join(out_dir, BUNDLE))
    return tfjs.write(out_dir, model, manifest)


def export(run_dir, out_dir, log=print) -> str:
    """``tfchargen export --format web``: writes the web export of a trained run into
    ``out_dir`` (the page's files, the model, then manifest.json); returns ``out_dir``."""
    from tfchargen.portable import manifest as manifest_lib
    from tfchargen.portable import numeric

    model = numeric.load(run_dir)
    write(out_dir, model, manifest_lib.build(model, "web"))
    log(f"exported {out_dir} (a static web page; serve it with any static file server, e.g. "
        f"`python -m http.server -d {out_dir}`, and open it in a browser)")
    return str(out_dir)
