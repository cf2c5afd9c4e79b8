// A small time-series line plot on a canvas: the last `span` points of a few named series,
// redrawn on each push. The points are also kept on the element (`data-points`, `data-last`)
// so that what the plot shows can be read without looking at pixels.

const SPAN = 60;
const COLOURS = ["--series-1", "--series-2", "--series-3"];

export class Plot {
  /** A plot of `series` (names) titled `title`, in `unit`. */
  constructor(title, series, unit) {
    this.series = series;
    this.unit = unit;
    this.points = [];
    this.canvas = document.createElement("canvas");
    this.canvas.setAttribute("role", "img");
    this.canvas.setAttribute("aria-label", `${title}: ${series.join(", ")} (${unit})`);
    this.el = document.createElement("figure");
    this.el.className = "plot";
    const caption = document.createElement("figcaption");
    caption.textContent = title;
    this.legend = document.createElement("span");
    this.legend.className = "legend";
    caption.append(" ", this.legend);
    this.el.append(caption, this.canvas);
    this.el.dataset.points = "0";
    // Drawn again at its new size whenever the layout changes it (a card added beside it, a
    // rotated tablet), instead of stretching the old pixels.
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  /** Adds one point: a value (number or null) per series. */
  push(values) {
    this.points.push(values);
    if (this.points.length > SPAN) this.points.shift();
    this.el.dataset.points = String(this.points.length);
    this.el.dataset.last = JSON.stringify(values);
    this.legend.textContent = this.series
      .map((s, i) => `${s} ${values[i] === null ? "—" : values[i].toFixed(1)}`).join(" · ");
    this.draw();
  }

  draw() {
    const style = getComputedStyle(document.documentElement);
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth || 300;
    const height = this.canvas.clientHeight || 140;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    const g = this.canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, width, height);
    const values = this.points.flat().filter((v) => v !== null);
    const top = niceCeiling(Math.max(1, ...values));
    const left = 36;
    const bottom = height - 16;
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = style.getPropertyValue("--muted");
    g.strokeStyle = style.getPropertyValue("--line");
    g.lineWidth = 1;
    for (const frac of [0, 0.5, 1]) {
      const y = bottom - frac * (bottom - 8);
      g.beginPath();
      g.moveTo(left, y);
      g.lineTo(width - 4, y);
      g.stroke();
      g.fillText(String(Math.round(top * frac * 10) / 10), 2, y + 4);
    }
    g.fillText(`last ${SPAN} s · ${this.unit}`, left, height - 3);
    const step = (width - 4 - left) / (SPAN - 1);
    const x0 = width - 4 - (this.points.length - 1) * step;
    this.series.forEach((_, i) => {
      g.strokeStyle = style.getPropertyValue(COLOURS[i % COLOURS.length]);
      g.lineWidth = 2;
      g.beginPath();
      let drawing = false;
      this.points.forEach((p, j) => {
        const v = p[i];
        if (v === null) {
          drawing = false;
          return;
        }
        const x = x0 + j * step;
        const y = bottom - (v / top) * (bottom - 8);
        if (drawing) g.lineTo(x, y);
        else g.moveTo(x, y);
        drawing = true;
      });
      g.stroke();
    });
  }
}

function niceCeiling(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
