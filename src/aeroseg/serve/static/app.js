// The page of `aeroseg serve`: a Leaflet map of the open image, a class box, and the class overlay.
// Talks to the JSON API of aeroseg/serve/app.py; every error it answers is shown in #error.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { map: null, raster: null, imageLayer: null, overlay: null, job: null, hidden: new Set() };

async function api(path, options) {
  const response = await fetch(path, options);
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
  state.imageLayer = L.tileLayer(`/api/rasters/${info.id}/tiles/{z}/{x}/{y}.png`, tileOptions).addTo(state.map);
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
  return `/api/jobs/${job.id}/tiles/{z}/{x}/{y}.png?hide=${hide}`;
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
  $("download-tif").href = `/api/jobs/${job.id}/classes.tif`;
  $("download-gpkg").href = `/api/jobs/${job.id}/polygons.gpkg`;
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
    $("progress").hidden = false;
    while (job.status === "queued" || job.status === "running") {
      $("progress").max = Math.max(job.total, 1);
      $("progress").value = job.done;
      $("status").textContent = `segmenting: ${job.done} / ${job.total} windows`;
      await new Promise((resolve) => setTimeout(resolve, 250));
      job = await api(`/api/jobs/${job.id}`);
    }
    if (job.status === "error") throw new Error(job.error);
    const [, , w, h] = job.window;
    $("status").textContent = `${w} × ${h} px segmented` + (job.cache_hits ? " (image features from the cache)" : "");
    showJob(job);
  } catch (error) {
    showError(error.message);
    $("status").textContent = "";
  } finally {
    $("progress").hidden = true;
    $("segment").disabled = false;
  }
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
    const info = await api(`/api/upload?filename=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
    showRaster(info);
    $("status").textContent = "";
  } catch (error) {
    showError(error.message);
    $("status").textContent = "";
  }
}

async function start() {
  $("segment").addEventListener("click", segment);
  $("open").addEventListener("click", () => openPath($("file").value));
  $("upload").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
  $("opacity").addEventListener("input", () => { if (state.overlay) state.overlay.setOpacity(Number($("opacity").value)); });
  try {
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
