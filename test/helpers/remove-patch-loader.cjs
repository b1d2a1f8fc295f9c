/* global module */
/**
 * A webpack loader for the replay suite's negative controls: bundles the workflows as if one
 * `patched('<id>')` guard had been removed (the call answers false, the old path runs), so the
 * suite can prove that replaying a recording made with the patch then fails.
 *
 * @this {{ getOptions(): { id: string } }}
 * @param {string} source
 * @returns {string}
 */
function removePatch(source) {
  const { id } = this.getOptions();
  return source.split(`patched('${id}')`).join('false');
}
module.exports = removePatch;
