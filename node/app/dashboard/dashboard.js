// The node's dashboard: plain DOM over the REST API, refreshed every few seconds.
// Every value is set with textContent: patient data never becomes markup.
"use strict";

const REFRESH_MS = 5000;
let selected = new URLSearchParams(location.search).get("study");
let viewerBase = null;

async function get(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function fill(tableId, rows, cells) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows.map((row) => {
    const tr = el("tr");
    for (const value of cells(row)) tr.append(value instanceof Node ? wrap(value) : el("td", value));
    return tr;
  }));
  return body;
}

function wrap(node) {
  const td = el("td");
  td.append(node);
  return td;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function duration(job) {
  return job.started_at && job.finished_at
    ? `${(job.finished_at - job.started_at).toFixed(1)} s` : "";
}

function badge(status) {
  const kind = (status || "").split(" ").pop();
  return el("span", status, `status ${kind}`);
}

function viewerLink(studyUid) {
  const link = el("a", "open in OHIF");
  link.href = `${viewerBase}/viewer?StudyInstanceUIDs=${encodeURIComponent(studyUid)}`;
  link.target = "_blank";
  link.className = "viewer-link";
  return link;
}

function routing(decisions) {
  const list = el("ul");
  for (const d of decisions) {
    const verdict = d.selected ? `→ ${d.pipeline}` : "not routed";
    list.append(el("li", `${verdict}: ${d.reason}`));
  }
  return list;
}

async function refreshCounts() {
  const health = await get("/api/health");
  viewerBase = health.viewer.url ||
    `${location.protocol}//${location.hostname}:${health.viewer.port}`;
  document.getElementById("version").textContent = `v${health.version}`;
  const counts = document.getElementById("counts");
  const items = [`studies ${health.counts.studies.total}`];
  for (const table of ["jobs", "outbox"]) {
    for (const [state, n] of Object.entries(health.counts[table])) {
      items.push(`${table} ${state} ${n}`);
    }
  }
  counts.replaceChildren(...items.map((text) => el("li", text)));
}

async function refreshStudies() {
  const studies = await get("/api/studies");
  const body = fill("studies", studies, (s) => [
    when(s.last_received_at), s.patient_id, s.study_date, s.study_description, s.calling_aet,
    s.instances, badge(s.status), routing(s.decisions), viewerLink(s.study_uid),
  ]);
  studies.forEach((s, i) => {
    const tr = body.children[i];
    tr.classList.add("study");
    tr.dataset.uid = s.study_uid;
    if (s.study_uid === selected) tr.classList.add("selected");
    tr.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      selected = s.study_uid;
      history.replaceState(null, "", `?study=${encodeURIComponent(selected)}`);
      refresh();
    });
  });
}

async function refreshStudy() {
  const section = document.getElementById("study");
  if (!selected) return;
  const detail = await get(`/api/studies/${encodeURIComponent(selected)}`);
  section.hidden = false;
  document.getElementById("study-uid").textContent = selected;
  document.getElementById("study-status").replaceChildren(badge(detail.status));
  const overlays = detail.jobs.filter((job) => job.state === "done").map((job) => {
    const figure = el("figure");
    const image = el("img");
    image.alt = `key image of job ${job.id}`;
    image.src = `/api/jobs/${job.id}/overlay.png?t=${job.finished_at}`;
    image.className = "overlay";
    figure.append(image, el("figcaption", `job ${job.id}: ${job.pipeline}`));
    figure.append(" ", viewerLink(selected));
    return figure;
  });
  document.getElementById("overlays").replaceChildren(...overlays);
  fill("decisions", detail.decisions, (d) => [
    el("span", d.series_uid || "", "uid"), d.pipeline || "-", d.selected ? "yes" : "no", d.reason,
  ]);
  fill("study-jobs", detail.jobs, (j) => [
    j.id, j.pipeline, badge(j.state), j.attempts, duration(j), el("span", j.error, "error"),
  ]);
  fill("study-outbox", detail.outbox, (o) => [
    el("span", o.sop_uid, "uid"), o.sop_class_uid, o.destination, badge(o.state), o.attempts,
    el("span", o.last_error, "error"),
  ]);
  fill("results", detail.results, (r) => [
    r.pipeline, r.structure || "(study)", r.qc ? badge(r.qc) : "", r.quantity,
    r.value === null ? r.text : Number(r.value).toPrecision(6), r.unit,
  ]);
}

async function refreshReview() {
  const studies = await get("/api/review");
  const body = fill("review", studies, (s) => [
    s.patient_id, s.study_date, el("span", s.study_uid, "uid"), s.pipelines, s.review, s.fail,
  ]);
  studies.forEach((s, i) => {
    const tr = body.children[i];
    tr.classList.add("study");
    tr.addEventListener("click", () => {
      selected = s.study_uid;
      history.replaceState(null, "", `?study=${encodeURIComponent(selected)}`);
      refresh();
    });
  });
}

async function refreshQueues() {
  const [jobs, outbox] = await Promise.all([get("/api/jobs?limit=20"), get("/api/outbox?limit=20")]);
  fill("jobs", jobs, (j) => [
    j.id, el("span", j.study_uid, "uid"), j.pipeline, badge(j.state), j.attempts, duration(j),
    el("span", j.error, "error"),
  ]);
  fill("outbox", outbox, (o) => [
    o.id, el("span", o.sop_uid, "uid"), o.destination, badge(o.state), o.attempts,
    el("span", o.last_error, "error"),
  ]);
}

async function refresh() {
  try {
    await refreshCounts();
    await Promise.all([refreshStudies(), refreshReview(), refreshStudy(), refreshQueues()]);
    document.body.dataset.loaded = "true";
  } catch (error) {
    console.error(error);
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
