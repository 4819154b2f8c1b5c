// The survey: reveal each follow-up field when its answer is chosen (the stylesheet does the
// same where :has() is supported, so the form works without JavaScript), count the characters
// left in the free text, and move focus to the error summary when there is one.
(function () {
  "use strict";
  var blocks = document.querySelectorAll("[data-show-when]");
  function update() {
    blocks.forEach(function (block) {
      var rule = block.getAttribute("data-show-when").split("=");
      var chosen = document.querySelector('input[name="' + rule[0] + '"]:checked');
      block.hidden = !(chosen && chosen.value === rule[1]);
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.type === "radio") { update(); }
  });
  update();

  document.querySelectorAll("[data-counts]").forEach(function (counter) {
    var field = document.getElementById(counter.getAttribute("data-counts"));
    var limit = parseInt(field.getAttribute("maxlength"), 10);
    var template = counter.getAttribute("data-template") || "%(left)s";
    var timer = null;
    function show() {
      var left = limit - field.value.length;
      counter.textContent = template.replace("%(left)s", String(left));
      counter.classList.toggle("over", left < 0);
    }
    // Announced politely, once typing pauses, rather than at every key.
    field.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(show, 400);
    });
    show();
  });

  var summary = document.querySelector(".error-summary");
  if (summary) { summary.focus(); }
})();
