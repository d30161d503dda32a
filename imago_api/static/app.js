// The Imago web page: upload, watch the status, read the results, give feedback, see look-alikes.
// Everything the API returns is inserted with textContent (never innerHTML): file names, OCR text and
// descriptions are user-controlled.
"use strict";

const $ = (id) => document.getElementById(id);
const RECONNECT_MS = 2000;
let current = null;   // the image id on display
let stream = null;    // the AbortController of the image's event stream

const keyInput = $("api-key");
keyInput.value = sessionStorage.getItem("imago-key") || "";
keyInput.addEventListener("change", () => { sessionStorage.setItem("imago-key", keyInput.value.trim()); loadRecent(); });

async function api(path, options = {}) {
  const headers = Object.assign({ "X-API-Key": keyInput.value.trim() }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function say(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
}

$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  sessionStorage.setItem("imago-key", keyInput.value.trim());
  const form = new FormData();
  form.append("file", file);
  $("upload-button").disabled = true;
  say("Uploading…");
  try {
    const image = await api("/images", { method: "POST", body: form });
    say(image.duplicate ? `Already uploaded as image ${image.id}.` : `Uploaded as image ${image.id}.`);
    show(image.id);
    loadRecent();
  } catch (error) {
    say(`Upload refused: ${error.message}`, true);
  } finally {
    $("upload-button").disabled = false;
  }
});

function show(imageId) {
  current = imageId;
  if (stream) stream.abort();
  ["classification-box", "ai-box", "ocr-box", "exif-box", "similar-box", "true-label"].forEach((id) => {
    $(id).hidden = true;
  });
  $("thumbnail").hidden = true;
  $("feedback-message").textContent = "";
  $("result").hidden = false;
  follow(imageId);
}

const finished = (status) => status === "done" || status === "failed";

// The image's detail once, then its progress pushed by the server (GET /images/{id}/events, Server-Sent
// Events read with fetch, which can send the API key header), then the detail again when it is finished.
async function follow(imageId) {
  try {
    const detail = await api(`/images/${imageId}`);
    if (imageId !== current) return;
    render(detail);
    if (finished(detail.status)) return completed(imageId);
  } catch (error) {
    return say(`Could not read image ${imageId}: ${error.message}`, true);
  }
  const controller = new AbortController();
  stream = controller;
  let ended = false;
  try {
    const response = await fetch(`/images/${imageId}/events`, {
      headers: { "X-API-Key": keyInput.value.trim(), "Accept": "text/event-stream" }, signal: controller.signal });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        ended = onEvent(imageId, block) || ended;
      }
    }
  } catch (error) {
    if (error.name === "AbortError") return;
  }
  if (!ended && imageId === current) setTimeout(() => { if (imageId === current) follow(imageId); }, RECONNECT_MS);
}

// One Server-Sent Event: `stage` and `status` update the page; `end` shows the finished image.
function onEvent(imageId, block) {
  if (imageId !== current) return false;
  let event = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return false;  // a comment (keep-alive) or the retry hint
  const payload = JSON.parse(data);
  if (event === "stage") {
    live.stages[payload.stage] = payload;
    renderProgress();
  } else if (event === "status") {
    live.status = payload.status;
    live.error = payload.error;
    renderProgress();
  } else if (event === "end") {
    if (payload.status === "erased") say(`Image ${imageId} was erased.`, true);
    else completed(imageId);
    return true;
  }
  return false;
}

async function completed(imageId) {
  if (live.id !== imageId || !live.complete) {
    try {
      const detail = await api(`/images/${imageId}`);
      if (imageId !== current) return;
      render(detail);
      live.complete = true;
    } catch (error) {
      return say(`Could not read image ${imageId}: ${error.message}`, true);
    }
  }
  loadRecent();
  loadSimilar(imageId);
}

// What the page knows of the image's progress: its status and each stage's.
let live = { id: null, status: null, error: null, stages: {}, complete: false };

function renderProgress() {
  $("image-status").textContent = live.status;
  $("image-status").dataset.status = live.status;
  $("image-error").textContent = live.error || "";
  const stages = $("stages");
  stages.replaceChildren(...Object.values(live.stages).map((stage) => {
    const item = document.createElement("li");
    item.textContent = `${stage.stage}: ${stage.status}` + (stage.error ? ` (${stage.error})` : "");
    return item;
  }));
}

function render(detail) {
  $("image-name").textContent = `${detail.original_name} (#${detail.id}, ${detail.width}×${detail.height})`;
  live = { id: detail.id, status: detail.status, error: detail.error, complete: finished(detail.status),
           stages: Object.fromEntries(detail.stages.map((stage) => [stage.stage, stage])) };
  renderProgress();
  if (detail.dead_letter) $("image-error").textContent += ` (gave up after ${detail.attempts} automatic retries)`;
  if (detail.thumbnail && $("thumbnail").hidden) {
    api(`/images/${detail.id}/thumbnail-url`).then((link) => {
      $("thumbnail").src = link.url;
      $("thumbnail").hidden = false;
    }).catch(() => {});
  }
  if (detail.classification) {
    const label = detail.classification.label;
    $("label").textContent = LABELS[label] || label;
    $("label").dataset.label = label;
    $("probability").textContent = `${Math.round(detail.classification.probability * 100)}%`;
    $("model-version").textContent = `model ${detail.classification.model_version}`;
    $("classification-box").hidden = false;
  }
  if (detail.ai) {
    $("description").textContent = detail.ai.description;
    $("tags").replaceChildren(...detail.ai.tags.map((tag) => {
      const item = document.createElement("li");
      item.textContent = tag;
      return item;
    }));
    $("ai-box").hidden = false;
  }
  if (detail.ocr) {
    $("ocr-text").textContent = detail.ocr.has_text ? detail.ocr.text : "(no text found)";
    $("ocr-language").textContent = detail.ocr.language ? `(${detail.ocr.language})` : "";
    $("ocr-box").hidden = false;
  }
  if (detail.exif) {
    const rows = Object.entries(detail.exif)
      .filter(([name, value]) => value !== null && typeof value !== "object" && name !== "extracted_at")
      .map(([name, value]) => {
        const row = document.createElement("tr");
        const key = document.createElement("td");
        const cell = document.createElement("td");
        key.textContent = name.replaceAll("_", " ");
        cell.textContent = String(value);
        row.append(key, cell);
        return row;
      });
    $("exif").tBodies[0].replaceChildren(...rows);
    const place = detail.exif.gps.place;
    if (place && place.city) {  // where the GPS position is, looked up offline by the EXIF stage
      $("place-name").textContent = [place.city, place.admin1, place.country].filter(Boolean).join(", ");
      $("place-name").href = detail.exif.gps.maps_url;
      const taken = detail.exif.camera.taken_at;
      $("place-time").textContent = taken ? `on ${taken.replace("T", " ")} (${place.timezone})` : "";
      $("place").hidden = false;
    } else {
      $("place").hidden = true;
    }
    $("exif-box").hidden = rows.length === 0;
  }
}

const LABELS = { cat: "Cat", dog: "Dog", other: "No cat or dog" };

async function feedback(correct, label = null) {
  try {
    await api(`/images/${current}/feedback`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(label ? { correct, label } : { correct }),
    });
    $("feedback-message").textContent = "Thanks, noted.";
    $("true-label").hidden = true;
  } catch (error) {
    $("feedback-message").textContent = `Not recorded: ${error.message}`;
  }
}
$("thumbs-up").addEventListener("click", () => feedback(true));
// "wrong" asks what it is: a cat, a dog, or neither, but not what was predicted (the API refuses "wrong,
// and it is what you said"); the next model learns from the answer
$("thumbs-down").addEventListener("click", () => {
  $("true-label").querySelectorAll("button").forEach((button) => {
    button.hidden = button.dataset.label === $("label").dataset.label;
  });
  $("true-label").hidden = false;
});
$("true-label").querySelectorAll("button").forEach((button) => {
  button.addEventListener("click", () => feedback(false, button.dataset.label));
});

function imageLink(image, text) {
  const item = document.createElement("li");
  const link = document.createElement("a");
  link.href = "#";
  link.textContent = text;
  link.addEventListener("click", (event) => { event.preventDefault(); show(image.id); });
  item.append(link);
  return item;
}

async function loadSimilar(imageId) {
  try {
    const found = await api(`/images/${imageId}/similar?limit=6`);
    if (imageId !== current) return;
    $("similar").replaceChildren(...found.items.map((match) => {
      const item = imageLink(match.image, `${match.image.original_name} (${Math.round(match.score * 100)}%)`);
      item.dataset.imageId = match.image.id;
      const thumb = document.createElement("img");
      thumb.alt = "";
      item.prepend(thumb);
      api(`/images/${match.image.id}/thumbnail-url`).then((link) => { thumb.src = link.url; }).catch(() => {});
      return item;
    }));
    $("similar-box").hidden = found.items.length === 0;
  } catch (error) {
    $("similar-box").hidden = true;  // no embedding (the stage failed): nothing to compare
  }
}

async function findDuplicates() {
  try {
    const found = await api("/images/duplicates");
    $("duplicates").replaceChildren(...found.groups.map((group) => {
      const item = document.createElement("li");
      const names = document.createElement("ul");
      names.replaceChildren(...group.images.map((image) => imageLink(image, `#${image.id} ${image.original_name}`)));
      item.append(`${group.images.length} copies of one picture:`, names);
      return item;
    }));
    const groups = found.groups.length === 1 ? "1 group" : `${found.groups.length} groups`;
    $("duplicates-summary").textContent = found.groups.length ? groups : "No near-duplicates among your images.";
    $("duplicates-box").hidden = false;
  } catch (error) {
    $("duplicates-summary").textContent = error.message;
    $("duplicates-box").hidden = false;
  }
}
$("find-duplicates").addEventListener("click", findDuplicates);

async function loadRecent() {
  if (!keyInput.value.trim()) return;
  try {
    const page = await api("/images?limit=10");
    const usage = page.usage;
    const quota = usage.quota_bytes === null ? "no quota" : `of ${(usage.quota_bytes / 1048576).toFixed(0)} MB`;
    const images = usage.images === 1 ? "1 image" : `${usage.images} images`;
    $("usage").textContent = `${images}, ${(usage.bytes_used / 1048576).toFixed(1)} MB used ${quota}`;
    $("recent-list").replaceChildren(...page.items.map((image) => {
      const item = document.createElement("li");
      item.textContent = `#${image.id} ${image.original_name} — ${image.status}`;
      item.addEventListener("click", () => show(image.id));
      return item;
    }));
  } catch (error) {
    $("usage").textContent = error.message;
  }
}
$("refresh-recent").addEventListener("click", loadRecent);
loadRecent();
