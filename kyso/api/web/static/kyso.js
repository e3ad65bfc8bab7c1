/* kyso web UI: a little plain JavaScript on top of pages that work without it.
   - [data-dropzone] forms: drop a PDF on the zone to choose it and send the form;
   - buttons with data-busy-text: show that the server is working after submit;
   - [data-picker]: click (or use the arrow keys) on the rendered page to place the signature;
   - [data-job]: a progress bar fed by GET /api/v1/jobs/{id}. */
(function () {
  "use strict";

  function onReady(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }

  function busy(form) {
    var button = form.querySelector("button[data-busy-text]");
    if (button) {
      button.textContent = button.getAttribute("data-busy-text");
      button.setAttribute("aria-busy", "true");
      window.setTimeout(function () { button.disabled = true; }, 0);
    }
  }

  function dropzones() {
    document.querySelectorAll("form[data-dropzone]").forEach(function (form) {
      var zone = form.querySelector("[data-drop-target]") || form;
      var input = form.querySelector("input[type=file]");
      form.addEventListener("submit", function () { busy(form); });
      ["dragenter", "dragover"].forEach(function (name) {
        zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
      });
      ["dragleave", "drop"].forEach(function (name) {
        zone.addEventListener(name, function () { zone.classList.remove("over"); });
      });
      zone.addEventListener("drop", function (event) {
        event.preventDefault();
        if (!input || !event.dataTransfer || !event.dataTransfer.files.length) { return; }
        input.files = event.dataTransfer.files;
        if (form.hasAttribute("data-autosubmit")) {
          if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
        }
      });
    });
    document.querySelectorAll("form[data-busy]").forEach(function (form) {
      form.addEventListener("submit", function () { busy(form); });
    });
  }

  /* The page image carries the PDFium matrix (pixel -> PDF user space) and the box size in
     pixels of the image; the click is kept in image pixels and sent as such: the server turns
     it into PDF coordinates. */
  function pickers() {
    document.querySelectorAll("[data-picker]").forEach(function (picker) {
      var img = picker.querySelector("img");
      var marker = picker.querySelector(".marker");
      var form = document.getElementById(picker.getAttribute("data-form"));
      if (!img || !marker || !form) { return; }
      var fx = form.querySelector("input[name=x]");
      var fy = form.querySelector("input[name=y]");
      var status = document.getElementById(picker.getAttribute("data-status"));
      var boxW = parseFloat(picker.getAttribute("data-box-w"));
      var boxH = parseFloat(picker.getAttribute("data-box-h"));
      var natW = parseFloat(picker.getAttribute("data-width"));
      var natH = parseFloat(picker.getAttribute("data-height"));

      function show(x, y) {
        var scale = img.clientWidth / natW;
        marker.style.width = (boxW * scale) + "px";
        marker.style.height = (boxH * scale) + "px";
        marker.style.left = (img.offsetLeft + (x - boxW / 2) * scale) + "px";
        marker.style.top = (img.offsetTop + (y - boxH / 2) * scale) + "px";
        marker.classList.add("shown");
        fx.value = Math.round(x);
        fy.value = Math.round(y);
        if (status) { status.textContent = status.getAttribute("data-chosen"); }
      }
      function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }
      function place(x, y) {
        show(clamp(x, boxW / 2, natW - boxW / 2), clamp(y, boxH / 2, natH - boxH / 2));
      }
      img.addEventListener("click", function (event) {
        var rect = img.getBoundingClientRect();
        var scale = natW / rect.width;
        place((event.clientX - rect.left) * scale, (event.clientY - rect.top) * scale);
      });
      picker.addEventListener("keydown", function (event) {
        var step = event.shiftKey ? 40 : 10;
        var x = fx.value ? parseFloat(fx.value) : natW / 2;
        var y = fy.value ? parseFloat(fy.value) : natH / 2;
        var moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
        if (event.key === "Enter" || event.key === " ") { place(x, y); event.preventDefault(); return; }
        if (!moves[event.key]) { return; }
        event.preventDefault();
        place(x + moves[event.key][0], y + moves[event.key][1]);
      });
      window.addEventListener("resize", function () {
        if (fx.value) { show(parseFloat(fx.value), parseFloat(fy.value)); }
      });
      if (fx.value) { img.complete ? show(parseFloat(fx.value), parseFloat(fy.value)) : img.addEventListener("load", function () { show(parseFloat(fx.value), parseFloat(fy.value)); }); }
    });
  }

  function jobs() {
    document.querySelectorAll("[data-job]").forEach(function (box) {
      var id = box.getAttribute("data-job");
      var bar = box.querySelector("progress");
      var text = box.querySelector(".progress-text");
      var result = box.querySelector(".progress-result");
      var template = box.getAttribute("data-progress-template");
      if (box.hasAttribute("data-finished")) { return; }
      function poll() {
        fetch("/api/v1/jobs/" + encodeURIComponent(id), { credentials: "same-origin", headers: { "Accept": "application/json" } })
          .then(function (response) { if (!response.ok) { throw new Error(String(response.status)); } return response.json(); })
          .then(function (job) {
            var total = job.total || 0;
            var done = job.done || 0;
            bar.max = Math.max(total, 1);
            bar.value = done;
            text.textContent = template.replace("{done}", done).replace("{total}", total);
            var finished = ["succeeded", "failed", "partial", "done", "finished", "cancelled"].indexOf(job.state || job.status) >= 0 || (total > 0 && done >= total);
            if (finished) {
              box.setAttribute("data-finished", job.state || job.status || "done");
              if (result) { result.hidden = false; }
              var link = box.querySelector("a[data-refresh]");
              if (link) { link.hidden = false; }
              window.setTimeout(function () { window.location.reload(); }, 400);
            } else {
              window.setTimeout(poll, 700);
            }
          })
          .catch(function () {
            /* the status API did not answer (e.g. the session ended): the page itself shows
               the job's state, so fall back to reloading it */
            window.setTimeout(function () { window.location.reload(); }, 1500);
          });
      }
      poll();
    });
  }

  onReady(function () { dropzones(); pickers(); jobs(); });
})();
