// The drawing pad: strokes on a white canvas, sent as PNG to POST /predict while drawing.
// All the computing (preprocessing, the network) happens on the server; this only draws.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const statusLine = document.getElementById("status");
const prediction = document.getElementById("prediction");
const bars = document.getElementById("bars");
const STROKE = 20;  // pixels on the 280-pixel pad: MNIST-like stroke width after scaling

let drawing = false, hasInk = false, inFlight = false, again = false, last = null;

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
  again = false;
  prediction.textContent = "–";
  statusLine.textContent = "draw with the mouse or a finger";
  for (const id of ["conv1", "conv2"]) document.getElementById(id).replaceChildren();
  document.getElementById("input").getContext("2d").clearRect(0, 0, 28, 28);
  showProbabilities(new Array(10).fill(0), -1);
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  last = point(event);
  strokeTo(last);
});
pad.addEventListener("pointermove", (event) => { if (drawing) strokeTo(point(event)); });
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => { drawing = false; requestPrediction(); });
}

function strokeTo(p) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = STROKE;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(last[0], last[1]);
  ctx.lineTo(p[0], p[1]);
  ctx.stroke();
  last = p;
  hasInk = true;
  requestPrediction();
}

// At most one request at a time; strokes drawn meanwhile are sent as soon as it returns.
function requestPrediction() {
  if (!hasInk) return;
  if (inFlight) { again = true; return; }
  inFlight = true;
  document.body.dataset.busy = "1";
  const started = performance.now();
  pad.toBlob(async (blob) => {
    try {
      const response = await fetch("/predict", { method: "POST", headers: { "Content-Type": "image/png" }, body: blob });
      const answer = await response.json();
      if (!response.ok) statusLine.textContent = answer.error;
      else if (hasInk) show(answer, performance.now() - started);
    } catch (error) {
      statusLine.textContent = `server unreachable: ${error}`;
    } finally {
      inFlight = false;
      if (again) { again = false; requestPrediction(); } else document.body.dataset.busy = "0";
    }
  }, "image/png");
}

function show(answer, roundTrip) {
  prediction.textContent = String(answer.digit);
  const timing = `${roundTrip.toFixed(0)} ms per prediction (network and preprocessing ${answer.milliseconds.toFixed(1)} ms)`;
  statusLine.textContent = answer.unsure ? `unsure: ${answer.unsure}; ${timing}` : timing;
  showProbabilities(answer.probabilities, answer.digit);
  drawGrey(document.getElementById("input"), answer.input.values);
  for (const name of ["conv1", "conv2"]) showMaps(document.getElementById(name), answer.maps[name]);
}

function showProbabilities(probabilities, best) {
  if (bars.children.length === 0) {
    for (let d = 0; d < 10; d++) {
      bars.insertAdjacentHTML("beforeend", `<span>${d}</span><div class="bar"><div></div></div><span class="p"></span>`);
    }
  }
  const rows = bars.querySelectorAll(".bar");
  const labels = bars.querySelectorAll(".p");
  probabilities.forEach((p, d) => {
    rows[d].firstElementChild.style.width = `${(100 * p).toFixed(1)}%`;
    rows[d].classList.toggle("best", d === best);
    labels[d].textContent = `${(100 * p).toFixed(1)}%`;
  });
}

function drawGrey(canvas, values) {  // values: 28*28 ink levels 0-255 (0 = background)
  const image = canvas.getContext("2d").createImageData(canvas.width, canvas.height);
  values.forEach((v, i) => { image.data.set([v, v, v, 255], 4 * i); });
  canvas.getContext("2d").putImageData(image, 0, 0);
}

function showMaps(container, maps) {  // maps: {shape: [C, H, W], values: flat}; one colour scale per layer
  const [channels, h, w] = maps.shape;
  const scale = Math.max(1e-6, ...maps.values.map(Math.abs));
  while (container.children.length !== channels) {
    if (container.children.length < channels) container.append(document.createElement("canvas"));
    else container.lastChild.remove();
  }
  for (let c = 0; c < channels; c++) {
    const canvas = container.children[c];
    canvas.width = w; canvas.height = h;
    const image = canvas.getContext("2d").createImageData(w, h);
    for (let i = 0; i < h * w; i++) {
      const v = maps.values[c * h * w + i] / scale;  // -1..1: white at 0, red up, blue down
      const fade = Math.round(255 * (1 - Math.abs(v)));
      image.data.set(v >= 0 ? [255, fade, fade, 255] : [fade, fade, 255, 255], 4 * i);
    }
    canvas.getContext("2d").putImageData(image, 0, 0);
  }
}

document.getElementById("clear").addEventListener("click", clearPad);
clearPad();
