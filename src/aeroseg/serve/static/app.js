// The page of `aeroseg serve`: a Leaflet map of the open image, a class box, and the class overlay.
// Talks to the JSON API of aeroseg/serve/app.py; every error it answers is shown in #error.
// The server's token comes in the address it printed (/?token=...): kept for this tab in sessionStorage
// and removed from the address bar, it goes with every request (a header, or ?token= for tiles and links).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { map: null, raster: null, imageLayer: null, overlay: null, job: null, hidden: new Set() };
const token = (() => {
  const given = new URLSearchParams(location.search).get("token");
  if (given) {
    sessionStorage.setItem("aeroseg-token", given);
    history.replaceState(null, "", location.pathname);
  }
  return given || sessionStorage.getItem("aeroseg-token") || "";
})();

function withToken(url) {
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${token}` };
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch (e) { body = { error: response.statusText }; }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function latLngBounds(frame) {
  const [south, west, north, east] = frame.bounds;
  return L.latLngBounds([south, west], [north, east]);
}

function showRaster(info) {
  state.raster = info;
  if (state.map) state.map.remove();
  clearResult();
  const bounds = latLngBounds(info);
  state.map = L.map("map", {
    crs: info.georeferenced ? L.CRS.EPSG3857 : L.CRS.Simple,
    minZoom: info.georeferenced ? Math.max(0, info.min_zoom - 2) : info.min_zoom - 1,
    maxZoom: info.max_zoom + 3,
  });
  const tileOptions = {
    bounds, noWrap: true, minNativeZoom: info.min_zoom, maxNativeZoom: info.max_zoom,
    minZoom: -20, maxZoom: info.max_zoom + 3,
  };
  state.tileOptions = tileOptions;
  state.imageLayer = L.tileLayer(withToken(`/api/rasters/${info.id}/tiles/{z}/{x}/{y}.png`), tileOptions).addTo(state.map);
  state.map.fitBounds(bounds);
  const crs = info.crs ? `, ${info.crs}` : ", no CRS (pixel coordinates)";
  $("image-info").textContent = `${info.name}: ${info.width} × ${info.height} px, bands ${info.bands.join(",")}${crs}`;
  document.body.dataset.raster = info.id;
}

function clearResult() {
  if (state.overlay && state.map) state.map.removeLayer(state.overlay);
  state.overlay = null;
  state.job = null;
  $("result").hidden = true;
  delete document.body.dataset.overlay;
}

function overlayUrl(job) {
  const hide = [...state.hidden].join(",");
  return withToken(`/api/jobs/${job.id}/tiles/{z}/{x}/{y}.png?hide=${hide}`);
}

function showJob(job) {
  if (state.overlay) state.map.removeLayer(state.overlay);
  state.job = job;
  state.hidden = new Set();
  state.overlay = L.tileLayer(overlayUrl(job), { ...state.tileOptions, opacity: Number($("opacity").value) });
  state.overlay.once("load", () => { document.body.dataset.overlay = job.id; });
  state.overlay.addTo(state.map);
  const legend = $("legend");
  legend.replaceChildren();
  const total = job.classes.reduce((sum, c) => sum + (c.pixels || 0), 0) || 1;
  for (const c of job.classes) {
    const item = document.createElement("li");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.dataset.classId = c.id;
    box.addEventListener("change", () => {
      if (box.checked) state.hidden.delete(c.id); else state.hidden.add(c.id);
      state.overlay.setUrl(overlayUrl(job));
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = c.colour;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.name;
    const share = document.createElement("span");
    share.className = "share";
    share.textContent = `${(100 * (c.pixels || 0) / total).toFixed(1)}%`;
    item.append(box, swatch, name, share);
    legend.append(item);
  }
  $("download-tif").href = withToken(`/api/jobs/${job.id}/classes.tif`);
  $("download-gpkg").href = withToken(`/api/jobs/${job.id}/polygons.gpkg`);
  $("download-parquet").href = withToken(`/api/jobs/${job.id}/polygons.parquet`);
  $("result").hidden = false;
}

async function segment() {
  showError("");
  if (!state.raster) { showError("open an image first"); return; }
  const b = state.map.getBounds();
  const threshold = $("threshold").value.trim();
  const request = {
    raster: state.raster.id,
    classes: $("classes").value,
    background_threshold: threshold === "" ? null : Number(threshold),
    scope: $("scope").value,
    bounds: [b.getSouth(), b.getWest(), b.getNorth(), b.getEast()],
    model: $("model").value,
  };
  $("segment").disabled = true;
  $("status").textContent = "starting (a model loads once on first use)…";
  try {
    let job = await api("/api/segment", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
    });
    state.running = job.id;
    $("cancel").hidden = false;
    $("progress").hidden = false;
    while (job.status === "queued" || job.status === "running") {
      $("progress").max = Math.max(job.total, 1);
      $("progress").value = job.done;
      $("status").textContent = `segmenting: ${job.done} / ${job.total} windows`;
      await new Promise((resolve) => setTimeout(resolve, 250));
      job = await api(`/api/jobs/${job.id}`);
    }
    if (job.status === "error") throw new Error(job.error);
    if (job.status === "cancelled") { $("status").textContent = "cancelled"; return; }
    const [, , w, h] = job.window;
    $("status").textContent = `${w} × ${h} px segmented` + (job.cache_hits ? " (image features from the cache)" : "");
    showJob(job);
  } catch (error) {
    showError(error.message);
    $("status").textContent = "";
  } finally {
    state.running = null;
    $("cancel").hidden = true;
    $("progress").hidden = true;
    $("segment").disabled = false;
  }
}

async function cancel() {
  if (!state.running) return;
  $("status").textContent = "cancelling…";
  try { await api(`/api/jobs/${state.running}`, { method: "DELETE" }); } catch (error) { showError(error.message); }
}

async function openPath(path) {
  showError("");
  try { showRaster(await api("/api/open", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ path }),
  })); } catch (error) { showError(error.message); }
}

async function upload(file) {
  showError("");
  $("status").textContent = `uploading ${file.name}…`;
  try {
    const info = await api(`/api/upload?filename=${encodeURIComponent(file.name)}`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file,
    });
    showRaster(info);
    $("status").textContent = "";
  } catch (error) {
    showError(error.message);
    $("status").textContent = "";
  }
}

async function start() {
  $("segment").addEventListener("click", segment);
  $("cancel").addEventListener("click", cancel);
  $("open").addEventListener("click", () => openPath($("file").value));
  $("upload").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
  $("opacity").addEventListener("input", () => { if (state.overlay) state.overlay.setOpacity(Number($("opacity").value)); });
  try {
    if (!token) throw new Error("open the address that aeroseg serve printed (it ends with ?token=…)");
    const s = await api("/api/state");
    for (const name of s.files) $("file").append(new Option(name, name));
    for (const name of ["default", ...s.presets]) $("models").append(new Option(name === "default" ? s.model : "", name));
    $("upload-limit").textContent = `(at most ${s.max_upload_mb} MiB)`;
    if (s.rasters.length) {
      const first = s.rasters[0];
      $("file").value = first.name;
      showRaster(first);
    }
  } catch (error) { showError(error.message); }
  document.body.dataset.ready = "1";
}

start();
