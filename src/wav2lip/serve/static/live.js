// The Live page: send an avatar once over a WebSocket (/api/live), then speech in 20 ms chunks of 16 kHz
// PCM (from the microphone through an AudioWorklet, or from a file at its own pace); show each lip-synced
// frame and play its sound on the Web Audio clock, a short buffer behind the newest frame.
// `window.liveStats` holds what arrived (read by the tests and benchmarks/bench_live_web.py).
"use strict";

const $ = (id) => document.getElementById(id);
const RATE = 16000; // what the server lip-syncs; the browser resamples to it where it can
const CHUNK_S = 0.02; // audio message length
const AVATAR_PIECE = 2 ** 20; // the server's largest avatar message
const BUFFER_S = 0.12; // playback delay behind the newest frame: absorbs network and generator jitter
const MAX_PICTURES = 100; // decoded pictures waiting for their time; older ones are dropped beyond this

let token = localStorage.getItem("wav2lip-token") || "";
let session = null;
window.liveStats = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
  if (/token/.test(message)) $("token-box").hidden = false;
}

function status(text) { $("status").textContent = text; }

function setRunning(running) {
  $("mic").disabled = running;
  $("play").disabled = running;
  $("stop").disabled = !running;
}

function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))];
}

// ---------------------------------------------------------------- audio sources

async function openContext() {
  try {
    return new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
  } catch (e) {
    return new AudioContext({ latencyHint: "interactive" }); // the server resamples then
  }
}

async function openMicrophone(s) {
  if (!navigator.mediaDevices || !window.AudioWorkletNode) {
    throw new Error("The microphone needs a secure page: open it as https:// or on localhost.");
  }
  try {
    s.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
  } catch (e) {
    throw new Error(`No microphone: ${e.message || e.name}`);
  }
  try {
    await s.ctx.audioWorklet.addModule("/static/live-capture.js");
    s.source = s.ctx.createMediaStreamSource(s.stream);
  } catch (e) { // a browser that cannot resample a microphone: capture at its rate, the server resamples
    await s.ctx.close();
    s.ctx = new AudioContext({ latencyHint: "interactive" });
    await s.ctx.resume();
    await s.ctx.audioWorklet.addModule("/static/live-capture.js");
    s.source = s.ctx.createMediaStreamSource(s.stream);
  }
  s.rate = s.ctx.sampleRate;
  s.node = new AudioWorkletNode(s.ctx, "wav2lip-capture", {
    numberOfInputs: 1, numberOfOutputs: 0, processorOptions: { chunk: Math.round(s.rate * CHUNK_S) },
  });
  s.node.port.onmessage = (e) => sendAudio(s, e.data);
}

async function decodeFile(s, file) {
  let buffer;
  try {
    buffer = await s.ctx.decodeAudioData(await file.arrayBuffer());
  } catch (e) {
    throw new Error(`${file.name}: this browser cannot decode its sound`);
  }
  const mono = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const channel = buffer.getChannelData(c);
    for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / buffer.numberOfChannels;
  }
  s.samples = mono;
  s.rate = buffer.sampleRate;
}

function feedFile(s) {
  const chunk = Math.round(s.rate * CHUNK_S);
  const start = performance.now();
  let at = 0;
  s.timer = setInterval(() => {
    const due = Math.min(s.samples.length, Math.floor((performance.now() - start) / 1000 * s.rate));
    while (at + chunk <= due || (due === s.samples.length && at < due)) {
      const end = Math.min(at + chunk, due);
      sendAudio(s, s.samples.slice(at, end));
      at = end;
    }
    if (at >= s.samples.length) endAudio(s);
  }, 5);
}

function stopCapture(s) {
  if (s.timer) clearInterval(s.timer);
  s.timer = null;
  if (s.node) {
    s.node.port.postMessage("stop");
    s.node.port.onmessage = null;
    if (s.source) s.source.disconnect();
  }
  if (s.stream) s.stream.getTracks().forEach((t) => t.stop());
}

function sendAudio(s, samples) {
  if (s.ws.readyState !== WebSocket.OPEN || s.audioEnded) return;
  s.sentAt.push(performance.now());
  s.ws.send(samples);
  s.stats.samplesSent += samples.length;
}

function endAudio(s) {
  stopCapture(s);
  if (s.audioEnded) return;
  s.audioEnded = true;
  if (s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify({ type: "end" }));
  status("Finishing the last frames…");
}

// ---------------------------------------------------------------- the stream

async function start(kind) {
  showError("");
  const avatar = $("avatar").files[0];
  const speech = $("speech").files[0];
  if (!avatar) return showError("Pick an avatar (a photo or a short video) first.");
  if (kind === "file" && !speech) return showError("Pick a speech file first, or use the microphone.");
  if (session && !session.finished) finish(session, "");
  setRunning(true);
  const s = {
    kind, ws: null, ctx: await openContext(), rate: RATE, sentAt: [], base: null, fps: 25, pictures: [],
    audioEnded: false, finished: false, error: "",
    stats: {
      frames: 0, speech: 0, pictures: 0, decoded: 0, drawn: 0, resyncs: 0, dropped: 0, samplesSent: 0,
      indices: [], samples: [], mouths: [], added: [], total: [], serverSend: [],
      firstImage: null, end: null, ready: null, rate: null, error: "",
    },
  };
  session = s;
  window.liveStats = s.stats;
  try {
    await s.ctx.resume();
    if (kind === "mic") await openMicrophone(s);
    else await decodeFile(s, speech);
  } catch (e) {
    finish(s, e.message);
    return;
  }
  connect(s, avatar);
}

function connect(s, avatar) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/live`);
  ws.binaryType = "arraybuffer";
  s.ws = ws;
  ws.onopen = async () => {
    ws.send(JSON.stringify({
      type: "start", token: token || undefined, avatar: { name: avatar.name, size: avatar.size },
      format: "f32le", sample_rate: s.rate, options: OptionControls.changed($("option-controls")),
    }));
    for (let at = 0; at < avatar.size; at += AVATAR_PIECE) {
      ws.send(await avatar.slice(at, at + AVATAR_PIECE).arrayBuffer());
    }
    status(`Preparing ${avatar.name} (finding the face in every frame)…`);
  };
  ws.onmessage = (e) => {
    if (typeof e.data === "string") onControl(s, JSON.parse(e.data));
    else onFrame(s, e.data);
  };
  ws.onclose = (e) => {
    const normal = e.code === 1000 || s.finished;
    finish(s, normal ? "" : s.error || `The connection closed (${e.code}${e.reason ? `: ${e.reason}` : ""}).`);
  };
}

function onControl(s, message) {
  if (message.type === "ready") {
    s.fps = message.fps;
    s.stats.ready = message;
    s.stats.rate = s.rate; // what the browser sends: 16000, or its own rate where it cannot resample
    const canvas = $("screen");
    canvas.width = message.width;
    canvas.height = message.height;
    canvas.hidden = false;
    requestAnimationFrame(() => draw(s));
    s.statsTimer = setInterval(() => showStats(s), 500);
    if (s.kind === "mic") {
      s.source.connect(s.node);
      status("Live: speak now.");
    } else {
      feedFile(s);
      status("Live: playing the speech file.");
    }
  } else if (message.type === "end") {
    s.stats.end = message;
  } else if (message.type === "error") {
    s.error = message.message;
    s.stats.error = message.message;
    showError(message.message);
  }
}

function onFrame(s, buffer) {
  const received = performance.now();
  const length = new DataView(buffer).getUint32(0, true);
  const h = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  if (s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify({ type: "ack", index: h.index }));
  const st = s.stats;
  st.frames += 1;
  st.indices.push(h.index);
  st.samples.push(h.sample);
  st.mouths.push(h.mouth);
  st.dropped = h.dropped;
  if (h.sample !== null) st.speech += 1;
  if (h.image) st.pictures += 1;
  if (h.chunk !== null && s.sentAt[h.chunk] !== undefined) {
    // the round trip from handing the chunk to the socket, less the server's own time for this frame
    const total = received - s.sentAt[h.chunk];
    st.total.push(total);
    st.added.push(total - (h.made - h.received) * 1000);
    st.serverSend.push((h.sent - h.made) * 1000); // JPEG and the hand-over to the server's event loop
  }
  const audioAt = 4 + length;
  const audio = new Float32Array(buffer.slice(audioAt, audioAt + 4 * h.audio));
  const image = h.image ? new Blob([new Uint8Array(buffer, audioAt + 4 * h.audio, h.image)], { type: "image/jpeg" })
    : null;
  schedule(s, h, audio, image);
}

function schedule(s, h, audio, image) {
  const ctx = s.ctx;
  const period = 1 / s.fps;
  if (s.base === null || s.base + h.index * period < ctx.currentTime + 0.005) {
    if (s.base !== null) s.stats.resyncs += 1; // late: start again a buffer behind this frame
    s.base = ctx.currentTime + BUFFER_S - h.index * period;
  }
  const at = s.base + h.index * period;
  if ($("sound").checked && audio.length) {
    const b = ctx.createBuffer(1, audio.length, RATE);
    b.copyToChannel(audio, 0);
    const source = ctx.createBufferSource();
    source.buffer = b;
    source.connect(ctx.destination);
    source.start(at);
  }
  if (!image) return;
  createImageBitmap(image).then((bitmap) => {
    const st = s.stats;
    if (!st.firstImage) st.firstImage = { index: h.index, width: bitmap.width, height: bitmap.height };
    st.decoded += 1;
    s.pictures.push({ at, bitmap });
    if (s.pictures.length > 1 && s.pictures[s.pictures.length - 2].at > at) s.pictures.sort((a, b) => a.at - b.at);
    while (s.pictures.length > MAX_PICTURES) s.pictures.shift().bitmap.close();
  }, () => { s.stats.badImages = (s.stats.badImages || 0) + 1; });
}

function draw(s) {
  if (s.ctx.state === "closed") { // the stream has ended and its sound has played
    s.pictures.forEach((p) => p.bitmap.close());
    s.pictures = [];
    return;
  }
  const now = s.ctx.currentTime - (s.ctx.outputLatency || 0);
  let shown = null;
  while (s.pictures.length && s.pictures[0].at <= now) {
    if (shown) shown.bitmap.close();
    shown = s.pictures.shift();
  }
  if (shown) {
    const canvas = $("screen");
    canvas.getContext("2d").drawImage(shown.bitmap, 0, 0, canvas.width, canvas.height);
    shown.bitmap.close();
    s.stats.drawn += 1;
  }
  if (!s.finished || s.pictures.length) requestAnimationFrame(() => draw(s));
}

function showStats(s) {
  const st = s.stats;
  const p50 = percentile(st.added, 50), total = percentile(st.total, 50);
  $("stats").textContent = `${st.frames} frames (${st.speech} with speech), ${st.dropped} dropped by the server` +
    (p50 === null ? "" : `; latency p50 ${total.toFixed(0)} ms, of which the web adds ${p50.toFixed(0)} ms`);
}

function finish(s, message) {
  if (s.finished) return;
  s.finished = true;
  stopCapture(s);
  if (s.ws && s.ws.readyState <= WebSocket.OPEN) s.ws.close();
  if (s.statsTimer) clearInterval(s.statsTimer);
  showStats(s);
  setRunning(false);
  if (message) {
    s.stats.error = s.stats.error || message;
    showError(message);
    status("Stopped.");
  } else {
    status(s.stats.end ? `Done: ${s.stats.end.frames} frames.` : "Stopped.");
  }
  const left = s.base === null ? 0 : s.base + (s.stats.indices.length + 1) / s.fps - s.ctx.currentTime;
  setTimeout(() => s.ctx.close(), 1000 * Math.max(0, left) + 500); // let the last frames play
}

$("mic").addEventListener("click", () => start("mic"));
$("play").addEventListener("click", () => start("file"));
$("stop").addEventListener("click", () => {
  if (!session || session.finished) return;
  if (session.audioEnded || !session.ws || session.ws.readyState !== WebSocket.OPEN) finish(session, "");
  else endAudio(session); // the server makes the frames of the audio it has, then ends the stream
});
$("token").addEventListener("change", () => {
  token = $("token").value.trim();
  localStorage.setItem("wav2lip-token", token);
});

// The option controls come from the server's option table (its live surface).
fetch("/api/options")
  .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
  .then((options) => OptionControls.build($("option-controls"), options.live, options.server))
  .catch((e) => showError(`The server does not answer: ${e.message}`));
