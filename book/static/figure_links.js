/* Click a figure to open its full-size image: each figure's image (a chapter's plot) becomes
   a link to the image file itself, which a phone's browser lets the reader zoom. The link's
   name is the image's alt text. */
document.addEventListener("DOMContentLoaded", () => {
  for (const img of document.querySelectorAll("main figure img, main .cell_output img")) {
    if (img.closest("a")) continue;
    const link = document.createElement("a");
    link.href = img.getAttribute("src");
    link.className = "figure-full-size";
    img.replaceWith(link);
    link.append(img);
  }
});
