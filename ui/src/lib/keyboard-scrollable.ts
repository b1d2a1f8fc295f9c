/**
 * A Svelte action for boxes that may scroll (`pre` has a max height): while its content
 * overflows, the box joins the tab order so a keyboard can scroll it; when it fits, it leaves
 * again, so short outputs add no tab stops.
 */
export function keyboardScrollable(node: HTMLElement) {
  const update = () => {
    const overflows = node.scrollHeight > node.clientHeight + 1 || node.scrollWidth > node.clientWidth + 1;
    if (overflows) node.tabIndex = 0;
    else node.removeAttribute('tabindex');
  };
  const observer = new ResizeObserver(update);
  observer.observe(node);
  const mutations = new MutationObserver(update);
  mutations.observe(node, { childList: true, characterData: true, subtree: true });
  update();
  return {
    destroy() {
      observer.disconnect();
      mutations.disconnect();
    },
  };
}
