// speechbatch dashboard: live updates by polling the /ui/api/ endpoints (no framework, no
// build step, nothing loaded from elsewhere). Pages render complete without this script.
"use strict";

(function () {
  const JOB_POLL_MS = 1500;
  const LIST_POLL_MS = 2000;
  const PROVIDER_POLL_MS = 3000;

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      window.location.assign("/ui/login");
      throw new Error("logged out");
    }
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  function setText(root, selector, text) {
    const node = root.querySelector(selector);
    if (node && node.textContent !== String(text)) node.textContent = String(text);
  }

  function setStatus(node, status) {
    if (!node) return;
    node.textContent = status;
    node.className = `status status-${status}`;
  }

  function setProgress(root, job) {
    const bar = root.querySelector('[data-field="bar"]');
    if (bar) {
      bar.value = job.percent;
      bar.textContent = job.percent_text;
    }
    setText(root, '[data-field="percent"]', job.percent_text);
    setText(root, '[data-field="rate"]', job.rate_text);
    setText(root, '[data-field="eta"]', job.eta_text);
    setStatus(root.querySelector('[data-field="status"]'), job.status);
  }

  // Repeat `step` every `ms` until it resolves to false; a failed poll is retried later.
  function poll(step, ms) {
    const tick = async () => {
      let again = true;
      try {
        again = await step();
      } catch (err) {
        console.warn("poll failed", err);
      }
      if (again) window.setTimeout(tick, ms);
    };
    window.setTimeout(tick, ms);
  }

  function byData(root, attr) {
    const rows = new Map();
    root.querySelectorAll(`[data-${attr}]`).forEach((row) => rows.set(row.dataset[attr], row));
    return rows;
  }

  // --- the jobs list -------------------------------------------------------------------
  function cell(row, text, field) {
    const td = document.createElement("td");
    if (field) td.dataset.field = field;
    td.textContent = text;
    row.append(td);
    return td;
  }

  // A row for a job submitted after the page was rendered (the first page shows it on top).
  function newJobRow(job) {
    const row = document.createElement("tr");
    row.dataset.job = job.id;
    const link = document.createElement("a");
    link.href = `/ui/jobs/${encodeURIComponent(job.id)}`;
    const code = document.createElement("code");
    code.textContent = job.id;
    link.append(code);
    cell(row, "").append(link);
    cell(row, job.created);
    cell(row, job.kind);
    cell(row, job.provider);
    const status = document.createElement("span");
    status.dataset.field = "status";
    cell(row, "").append(status);
    cell(row, "", "done");
    const progress = cell(row, "");
    progress.className = "progress-cell";
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.dataset.field = "bar";
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.dataset.field = "percent";
    progress.append(bar, " ", pct);
    cell(row, "", "rate");
    cell(row, "", "eta");
    return row;
  }

  function liveJobsList(table) {
    const firstPage = table.dataset.firstPage === "yes";
    const body = table.querySelector("tbody");
    poll(async () => {
      const page = await getJson(table.dataset.live);
      const rows = byData(table, "job");
      let open = false;
      for (const job of page.jobs.slice().reverse()) {
        let row = rows.get(job.id);
        if (!row && firstPage) {
          row = newJobRow(job);
          body.prepend(row);
          table.hidden = false;
          const empty = document.getElementById("no-jobs");
          if (empty) empty.hidden = true;
        }
        if (!row) continue;
        const c = job.counts;
        setProgress(row, job);
        setText(row, '[data-field="done"]', `${c.succeeded + c.failed + c.canceled + c.skipped} / ${c.total}`);
        row.dataset.terminal = job.terminal ? "yes" : "no";
        open = open || !job.terminal;
      }
      return open || firstPage;  // the first page keeps watching for new jobs
    }, LIST_POLL_MS);
  }

  // --- one job ---------------------------------------------------------------------------
  function outputCell(cell, item) {
    if (cell.dataset.filled === "yes" || (!item.output_url && !item.transcript_url)) return;
    cell.textContent = "";
    if (item.transcript_url) {
      const details = document.createElement("details");
      details.dataset.transcript = item.transcript_url;
      const summary = document.createElement("summary");
      summary.textContent = "Transcript";
      details.append(summary, document.createElement("pre"));
      wireTranscript(details);
      cell.append(details);
    } else {
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "none";
      audio.src = item.output_url;
      cell.append(audio);
    }
    cell.dataset.filled = "yes";
  }

  function updateItems(table, items) {
    const rows = byData(table, "item");
    for (const item of items) {
      const row = rows.get(item.id);
      if (!row) continue;
      setStatus(row.querySelector('[data-field="status"]'), item.status);
      setText(row, '[data-field="attempts"]', item.attempts);
      const error = row.querySelector('[data-field="error"]');
      const text = item.error_code ? `${item.error_code} ${item.error_message || ""}` : "";
      if (error && error.textContent.trim() !== text.trim()) {
        error.textContent = "";
        if (item.error_code) {
          const code = document.createElement("code");
          code.textContent = item.error_code;
          error.append(code, ` ${item.error_message || ""}`);
        }
      }
      const cell = row.querySelector('[data-field="output"]');
      if (cell) outputCell(cell, item);
    }
  }

  function liveJob(section) {
    const table = document.getElementById("items");
    const cancel = section.querySelector('form[data-show="running"]');
    const retry = section.querySelector('form[data-show="failed"]');
    const step = async () => {
      // Both read before either is shown, so counts and item rows change together.
      const [job, page] = await Promise.all([
        getJson(section.dataset.live),
        table ? getJson(section.dataset.items) : Promise.resolve(null),
      ]);
      setProgress(section, job);
      for (const [name, value] of Object.entries(job.counts)) {
        setText(section, `[data-count="${name}"]`, value);
      }
      setText(section, '[data-field="started"]', job.started_at);
      setText(section, '[data-field="finished"]', job.finished_at);
      setText(section, '[data-field="characters"]', job.usage.characters);
      setText(section, '[data-field="audio_seconds"]', job.usage.audio_seconds);
      if (job.cost && job.cost.estimated !== null) {
        setText(section, '[data-field="cost"]', `$${job.cost.estimated.toFixed(4)}`);
      }
      if (cancel) cancel.hidden = job.terminal;
      if (retry) retry.hidden = job.counts.failed === 0 || job.status === "canceled";
      if (page) updateItems(table, page.items);
      section.dataset.terminal = job.terminal ? "yes" : "no";
      return !job.terminal;
    };
    if (section.dataset.terminal !== "yes") poll(step, JOB_POLL_MS);
  }

  function wireTranscript(details) {
    details.addEventListener("toggle", async () => {
      const pre = details.querySelector("pre");
      if (!details.open || details.dataset.loaded === "yes") return;
      pre.textContent = "Loading…";
      try {
        const response = await fetch(details.dataset.transcript, { credentials: "same-origin" });
        pre.textContent = response.ok ? await response.text() : `HTTP ${response.status}`;
        details.dataset.loaded = response.ok ? "yes" : "no";
      } catch (err) {
        pre.textContent = String(err);
      }
    });
  }

  // --- providers -------------------------------------------------------------------------
  function liveProviders(table) {
    poll(async () => {
      const body = await getJson(table.dataset.live);
      const rows = byData(table, "provider");
      for (const s of body.providers) {
        const row = rows.get(`${s.limits_name || s.provider}:${s.credential}`);
        if (!row) continue;
        setText(row, '[data-field="in_flight"]', s.in_flight);
        setText(row, '[data-field="concurrency"]', `${s.effective_concurrency} / ${s.max_concurrency}`);
        setText(row, '[data-field="rps"]', s.rps_text);
        const circuit = row.querySelector('[data-field="circuit"]');
        if (circuit) {
          circuit.className = `status circuit-${s.circuit}`;
          let text = s.circuit;
          if (s.circuit === "open" && s.circuit_open_until) text += ` until ${s.circuit_open_until_text}`;
          if (s.probing) text += " (probing)";
          circuit.textContent = text;
        }
        setText(row, '[data-field="error"]', s.error || "");
      }
      return true;
    }, PROVIDER_POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const jobs = document.getElementById("jobs");
    if (jobs && jobs.dataset.live) liveJobsList(jobs);
    const job = document.getElementById("job");
    if (job && job.dataset.live) liveJob(job);
    document.querySelectorAll("details[data-transcript]").forEach(wireTranscript);
    const providers = document.getElementById("providers");
    if (providers && providers.dataset.live) liveProviders(providers);
  });
})();
