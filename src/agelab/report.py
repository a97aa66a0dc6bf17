"""``report.html``: a self-contained page summarising a run folder (opens without a server)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from agelab.runs import read_metrics


def plot_curves(run_dir: Path, out: Path) -> Path | None:
    """Training curves from metrics.jsonl as a PNG (None when there is nothing to plot)."""
    records = read_metrics(run_dir)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("enc/kl_real", "enc/kl_fake", "gen/kl_fake", "enc/rec_x", "gen/rec_z") if k in records[0]]
    if not keys:  # a model with other phases (pix2pix: disc, gen): its logged losses
        keys = sorted(k for k in records[0] if "/" in k)[:6]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
    steps = [r["step"] for r in records]
    for ax, k in zip(axes[0], keys):
        ax.plot(steps, [r.get(k) for r in records], lw=1)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _img(path: Path) -> str:
    if not path.exists():
        return f"<p><em>{html.escape(path.name)} missing</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    from agelab.runs import Run

    run = Run(Path(run_dir))
    config, summary = run.config().to_dict(), run.summary()
    curves = plot_curves(run_dir, run_dir / "curves.png")
    records = read_metrics(run_dir)
    last = records[-1] if records else {}
    rec = summary.get("test_reconstruction", {})
    rows = [("iterations", summary.get("step", "?")), ("held-out images", summary.get("test_images", "?"))]
    rows += [(f"test reconstruction {k}" + (" (dB, [0,1] scale)" if k == "psnr" else " ([-1,1] units)"), f"{v:.4f}")
             for k, v in rec.items()]
    rows += [(f"last logged {k}", f"{v:.4g}") for k, v in last.items() if k != "step" and isinstance(v, float)]
    table = "".join(f"<tr><td>{html.escape(str(a))}</td><td>{html.escape(str(b))}</td></tr>" for a, b in rows)
    cfg_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(repr(v))}</td></tr>" for k, v in sorted(config.items()))
    has_encoder = "test_reconstruction" in summary or (run_dir / "reconstructions.png").exists()
    recon_html = (f'<div><h2>Held-out reconstructions (real | g(e(x)))</h2>{_img(run_dir / "reconstructions.png")}'
                  '</div>' if has_encoder else "<div><h2>Reconstructions</h2><p>none: this model has no "
                  "encoder</p></div>")
    interp_what = "slerp between e(x1) and e(x2)" if has_encoder else "slerp between prior samples z1 and z2"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>agelab run {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} img{{image-rendering:pixelated;max-width:100%}}
td{{padding:2px 10px;border-bottom:1px solid #ddd}} .g{{display:flex;gap:2em;flex-wrap:wrap}}</style></head><body>
<h1>agelab run {html.escape(run_dir.name)}</h1>
<h2>Numbers</h2><table>{table}</table>
<div class="g"><div><h2>Samples g(z), z ~ prior</h2>{_img(run_dir / "samples.png")}</div>
{recon_html}</div>
<h2>Interpolations ({interp_what})</h2>{_img(run_dir / "interpolations.png")}
<h2>Training curves</h2>{_img(curves) if curves else "<p>no metrics</p>"}
<h2>Config</h2><table>{cfg_rows}</table></body></html>"""
    out = run_dir / "report.html"
    out.write_text(page)
    return out
