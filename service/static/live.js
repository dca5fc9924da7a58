// The demo's live tab: microphone -> MediaRecorder (WebM/Opus) -> WS /stream -> what it hears.
// Runs as a Gradio HTML component's js_on_load, where `element` is the component's root.
const $ = (id) => element.querySelector("#" + id);
const CHART_SECONDS = 10;
const LINES = 5;
const COLOURS = ["#f97316", "#2563eb", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04"];
let socket = null;
let recorder = null;
let media = null;
let history = [];  // {end, scores: {label: score}} per window of the first head
let shownModel = null;  // the model whose windows are drawn (the first one the server lists)

function streamUrl() {
  const url = new URL("../stream", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function shown(label) {
  return label.startsWith("_") ? "no keyword" : label;
}

function setStatus(text) {
  $("live-status").textContent = text;
}

function drawChart() {
  const canvas = $("live-chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  const left = 48, right = 150, top = 12, bottom = 36;
  ctx.clearRect(0, 0, w, h);
  const latest = history.length ? history[history.length - 1].end : CHART_SECONDS;
  const t0 = Math.max(0, latest - CHART_SECONDS), t1 = Math.max(latest, CHART_SECONDS);
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (w - left - right);
  const y = (s) => top + (1 - s) * (h - top - bottom);
  ctx.strokeStyle = "#ddd";
  ctx.fillStyle = "#555";
  ctx.font = "11px sans-serif";
  ctx.lineWidth = 1;
  for (const s of [0, 0.25, 0.5, 0.75, 1]) {
    ctx.beginPath(); ctx.moveTo(left, y(s)); ctx.lineTo(w - right, y(s)); ctx.stroke();
    ctx.textAlign = "right"; ctx.fillText(Math.round(s * 100) + "%", left - 6, y(s) + 4);
  }
  ctx.textAlign = "center";
  for (let t = Math.ceil(t0); t <= t1; t += 1) {
    ctx.beginPath(); ctx.moveTo(x(t), h - bottom); ctx.lineTo(x(t), h - bottom + 4); ctx.stroke();
    ctx.fillText(t + "", x(t), h - bottom + 16);
  }
  ctx.fillText("time (s)", (left + w - right) / 2, h - 4);
  ctx.save(); ctx.translate(12, (top + h - bottom) / 2); ctx.rotate(-Math.PI / 2);
  ctx.fillText("score", 0, 0); ctx.restore();
  const visible = history.filter((p) => p.end >= t0);
  const best = {};
  for (const p of visible) {
    for (const [label, score] of Object.entries(p.scores)) {
      best[label] = Math.max(best[label] || 0, score);
    }
  }
  const labels = Object.keys(best).sort((a, b) => best[b] - best[a]).slice(0, LINES);
  labels.forEach((label, i) => {
    ctx.strokeStyle = COLOURS[i % COLOURS.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    visible.forEach((p, j) => {
      const px = x(p.end), py = y(p.scores[label] || 0);
      if (j === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
    ctx.fillStyle = COLOURS[i % COLOURS.length];
    ctx.textAlign = "left";
    ctx.fillRect(w - right + 12, top + 6 + i * 18, 12, 3);
    const name = label.startsWith("_") ? `(${label.replaceAll("_", "")})` : label;
    ctx.fillText(name, w - right + 30, top + 10 + i * 18);
  });
}

function onEvent(event) {
  if (event.type === "ready") {
    const model = event.models[0];
    shownModel = model.name;
    const others = event.models.slice(1).map((m) => m.name);
    setStatus(`Listening: ${model.name}, ${model.window} s windows every ${event.hop} s` +
      (others.length ? `; also ${others.join(", ")} (detections only).` : "."));
  } else if (event.type === "window" && event.model === shownModel) {
    const top = event.predictions[0].top_k;
    const scores = {};
    for (const s of top) scores[s.label] = s.score;
    history.push({end: event.end, scores});
    if (history.length > 400) history.shift();
    const now = $("live-top");
    now.textContent = shown(top[0].label);
    now.classList.toggle("no-keyword", top[0].label.startsWith("_"));
    $("live-score").textContent = Math.round(top[0].score * 100) + "%";
    drawChart();
  } else if (event.type === "detection") {
    const item = document.createElement("li");
    item.textContent = `${event.label} at ${event.end.toFixed(1)} s (${Math.round(event.score * 100)}%)`;
    $("live-detections").append(item);  // in the order they were said: 1 is the first
  } else if (event.type === "error") {
    setStatus(`Stopped by the server: ${event.error.message}`);
  }
}

function release() {
  if (recorder && recorder.state !== "inactive") recorder.stop();
  if (media) media.getTracks().forEach((track) => track.stop());
  recorder = null;
  media = null;
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}

async function start() {
  $("live-start").disabled = true;
  history = [];
  $("live-detections").replaceChildren();
  try {
    media = await navigator.mediaDevices.getUserMedia({audio: true});
  } catch (error) {
    setStatus(`No microphone: ${error.message}`);
    $("live-start").disabled = false;
    return;
  }
  socket = new WebSocket(streamUrl());
  socket.onopen = () => {
    socket.send(JSON.stringify({type: "start", format: "webm", hop: 0.25, top_k: 5}));
    recorder = new MediaRecorder(media, {mimeType: "audio/webm;codecs=opus"});
    recorder.ondataavailable = (e) => {
      if (e.data.size && socket && socket.readyState === WebSocket.OPEN) socket.send(e.data);
    };
    recorder.onstop = () => {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({type: "end"}));
    };
    recorder.start(100);
    $("live-stop").disabled = false;
  };
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onclose = (e) => {
    if (e.code !== 1000) setStatus(`Closed (${e.code}): ${e.reason || "connection lost"}`);
    else setStatus("Stopped.");
    socket = null;
    release();
    // Nothing is being heard once the stream is over.
    $("live-top").textContent = "\u2014";
    $("live-top").classList.remove("no-keyword");
    $("live-score").textContent = "";
  };
}

$("live-start").addEventListener("click", start);
$("live-stop").addEventListener("click", () => {
  setStatus("Stopping...");
  release();
});
drawChart();
