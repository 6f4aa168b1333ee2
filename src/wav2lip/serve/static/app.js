// The wav2lip page: pick the face and the speech, start a job, follow it, play the result.
// Plain JS against the same API as curl (/api/jobs); the job being watched survives a reload.
"use strict";

const $ = (id) => document.getElementById(id);
let token = localStorage.getItem("wav2lip-token") || "";
let watching = null; // id of the job shown in the progress / result area
let resultUrl = null; // object URL of a result fetched with the token

function headers() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    $("token-box").hidden = false;
    throw new Error("This server needs its access token: enter it above.");
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response.status === 204 ? null : response.json();
}

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// ---------------------------------------------------------------- inputs and previews

function preview(input, box) {
  box.textContent = "";
  const file = input.files[0];
  if (!file) return;
  const url = URL.createObjectURL(file);
  let element;
  if (file.type.startsWith("image/")) {
    element = document.createElement("img");
    element.alt = file.name;
  } else if (file.type.startsWith("audio/")) {
    element = document.createElement("audio");
    element.controls = true;
  } else {
    element = document.createElement("video");
    element.controls = true;
    element.muted = input.id === "face";
    element.playsInline = true;
    element.preload = "auto";
  }
  const name = document.createElement("div");
  name.className = "muted";
  name.textContent = `${file.name} (${(file.size / 2 ** 20).toFixed(1)} MB)`;
  // Browsers play fewer formats than the server reads (MPEG-4 Part 2, many image types): say so, no error.
  const noPreview = () => {
    element.replaceWith(document.createTextNode("No preview in this browser; the server reads the file anyway."));
  };
  element.addEventListener("error", noPreview);
  element.addEventListener("loadedmetadata", () => {
    if (element.tagName === "VIDEO" && input.id === "face" && !element.videoWidth) noPreview();
    else if (element.tagName === "VIDEO") element.currentTime = 0.1; // a frame to look at, not black
  }, { once: true });
  element.src = url;
  box.append(element, name);
}

for (const [inputId, dropId, previewId] of [["face", "face-drop", "face-preview"],
                                            ["audio", "audio-drop", "audio-preview"]]) {
  const input = $(inputId), drop = $(dropId);
  input.addEventListener("change", () => preview(input, $(previewId)));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      preview(input, $(previewId));
    }
  });
}

// ---------------------------------------------------------------- submitting

function upload(form) {
  // XMLHttpRequest rather than fetch: it reports upload progress.
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/jobs");
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) progressView(e.loaded / e.total, `uploading ${Math.round(100 * e.loaded / e.total)}%`);
    };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 401) $("token-box").hidden = false;
      if (xhr.status === 201) resolve(body);
      else reject(new Error(body.detail || `${xhr.status} ${xhr.statusText}`));
    };
    xhr.onerror = () => reject(new Error("the upload failed: is the server still running?"));
    xhr.send(form);
  });
}

$("job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  const form = new FormData();
  form.append("face", $("face").files[0]);
  form.append("audio", $("audio").files[0]);
  // The options changed from what the page showed, with the option table's names.
  for (const [name, value] of Object.entries(OptionControls.changed($("option-controls")))) form.append(name, value);
  $("start").disabled = true;
  $("result-box").hidden = true;
  try {
    const job = await upload(form);
    watch(job.id);
  } catch (e) {
    $("progress-box").hidden = true;
    showError(e.message);
  } finally {
    $("start").disabled = false;
    refreshJobs();
  }
});

// ---------------------------------------------------------------- following a job

function progressView(fraction, text) {
  $("progress-box").hidden = false;
  $("progress").value = fraction;
  $("progress-text").textContent = text;
}

function describe(job) {
  if (job.status === "queued") return "waiting for the jobs before it";
  if (job.status !== "running") return job.status;
  if (!job.frames) return "starting: reading the inputs, finding the face";
  let text = `${job.frames} of ${job.frames_total} frames`;
  if (job.speed) text += ` · ${job.speed.toFixed(1)} frames/s`;
  if (job.eta !== null) text += ` · about ${clock(job.eta)} left`;
  return text;
}

async function watch(id) {
  watching = id;
  localStorage.setItem("wav2lip-job", id);
  $("cancel").hidden = false;
  while (watching === id) {
    let job;
    try {
      job = await api(`/api/jobs/${id}`);
    } catch (e) {
      showError(e.message);
      localStorage.removeItem("wav2lip-job");
      $("progress-box").hidden = true;
      return;
    }
    progressView(job.progress, describe(job));
    if (["done", "failed", "cancelled"].includes(job.status)) {
      $("progress-box").hidden = true;
      refreshJobs();
      if (job.status === "done") await showResult(job);
      else if (job.status === "failed") showError(`The job failed: ${job.error}`);
      else showError("The job was cancelled.");
      return;
    }
    await new Promise((r) => setTimeout(r, 700));
  }
}

async function showResult(job) {
  const video = $("result");
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = null;
  let src = job.result;
  if (token) { // a <video> cannot send the header: fetch the file with it
    const response = await fetch(job.result, { headers: headers() });
    resultUrl = URL.createObjectURL(await response.blob());
    src = resultUrl;
  }
  video.src = src;
  $("download").href = src;
  $("download").download = `${job.face.replace(/\.[^.]*$/, "")}-wav2lip.mp4`;
  const seconds = job.started && job.finished ? (Date.parse(job.finished) - Date.parse(job.started)) / 1000 : null;
  $("result-info").textContent = `${job.frames} frames` + (job.faces_missed ? `, ${job.faces_missed} without a face` : "") +
    (seconds !== null ? `, made in ${clock(seconds)}` : "");
  $("result-box").hidden = false;
  video.play().catch(() => { /* autoplay refused: the controls are there */ });
}

$("cancel").addEventListener("click", async () => {
  if (!watching) return;
  try {
    await api(`/api/jobs/${watching}`, { method: "DELETE" });
  } catch (e) {
    showError(e.message);
  }
});

// ---------------------------------------------------------------- past jobs

async function refreshJobs() {
  let jobs;
  try {
    jobs = await api("/api/jobs");
  } catch (e) {
    showError(e.message);
    return;
  }
  const list = $("jobs");
  list.textContent = "";
  $("no-jobs").hidden = jobs.length > 0;
  for (const job of jobs) {
    const item = document.createElement("li");
    item.dataset.id = job.id;
    const names = document.createElement("span");
    names.className = "names";
    names.textContent = `${job.face} + ${job.audio}`;
    names.title = job.error || new Date(job.created).toLocaleString();
    const status = document.createElement("span");
    status.className = `status ${job.status}`;
    status.textContent = job.status;
    item.append(names, status);
    if (job.status === "done") {
      const show = document.createElement("button");
      show.type = "button";
      show.className = "secondary";
      show.textContent = "Show";
      show.onclick = () => { showError(""); watching = job.id; showResult(job); };
      item.append(show);
    } else if (job.status === "running" || job.status === "queued") {
      const follow = document.createElement("button");
      follow.type = "button";
      follow.className = "secondary";
      follow.textContent = "Follow";
      follow.onclick = () => watch(job.id);
      item.append(follow);
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "secondary";
    remove.textContent = job.status === "running" || job.status === "queued" ? "Cancel" : "Delete";
    remove.onclick = async () => {
      try {
        await api(`/api/jobs/${job.id}`, { method: "DELETE" });
      } catch (e) {
        showError(e.message);
      }
      refreshJobs();
    };
    item.append(remove);
    list.append(item);
  }
}

// ---------------------------------------------------------------- start

$("token-save").addEventListener("click", () => {
  token = $("token").value.trim();
  localStorage.setItem("wav2lip-token", token);
  $("token-box").hidden = true;
  showError("");
  start();
});

async function start() {
  try {
    const health = await api("/api/health");
    $("server").textContent = `${health.checkpoint} · ${health.detector} · ${health.precision} on ${health.device}`;
    const options = await api("/api/options");
    OptionControls.build($("option-controls"), options.jobs, options.server);
    if (health.token_required && !token) $("token-box").hidden = false;
  } catch (e) {
    showError(`The server does not answer: ${e.message}`);
    return;
  }
  await refreshJobs();
  const last = localStorage.getItem("wav2lip-job");
  if (last) watch(last);
}

start();
