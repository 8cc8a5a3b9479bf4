
(function () {
  var box = document.getElementById("only-failures");
  box.parentNode.hidden = false;
  box.addEventListener("change", function () {
    document.body.classList.toggle("only-failures", box.checked);
  });
  function reveal() {
    var target = location.hash && document.getElementById(location.hash.slice(1));
    for (var node = target; node; node = node.parentElement) {
      if (node.tagName === "DETAILS") { node.open = true; }
    }
  }
  window.addEventListener("hashchange", reveal);
  reveal();
})();
