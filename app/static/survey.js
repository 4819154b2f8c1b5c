// Reveals the survey's follow-up fields only when their answer is chosen.
// Without JavaScript every field shows, and the form works the same.
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
})();
