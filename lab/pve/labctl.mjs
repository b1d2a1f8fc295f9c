#!/usr/bin/env node
// @ts-check
// The lab's controls for people: switch a fault of a running lab's VM 102 on or off, set how
// long the lab's HA manager takes, or see the VM as the node has it. `npm start` prints the
// node root to use.
//
//   node lab/pve/labctl.mjs NODE_ROOT status
//   node lab/pve/labctl.mjs NODE_ROOT fault NAME on|off      (names: see lab-vm.mjs)
//   node lab/pve/labctl.mjs NODE_ROOT ha-delay SECONDS|never

import { FAULTS, PLAYED_FAULTS, readVm, setFault } from './lab-vm.mjs';
import { updateLabState } from './pve-node.mjs';
import { scopePids } from './cgroups.mjs';

const [root, command, ...rest] = process.argv.slice(2);
const usage = `usage: labctl.mjs NODE_ROOT status | fault NAME on|off | ha-delay SECONDS|never
faults: ${FAULTS.map((f) => (PLAYED_FAULTS.includes(f) ? `${f} (played)` : f)).join(', ')}`;

function fail(/** @type {string} */ message) {
  process.stderr.write(`labctl: ${message}\n${usage}\n`);
  process.exit(64);
}

if (!root || !command) fail('missing arguments');
const node = /** @type {string} */ (root);
try {
  if (command === 'status') {
    const vm = readVm(node);
    process.stdout.write(`${JSON.stringify({ running: vm.running, pid: vm.pid, faults: vm.faults, pending: vm.pending, scopePids: scopePids(node) }, null, 2)}\n`);
  } else if (command === 'fault') {
    const [name, state] = rest;
    if (!name || (state !== 'on' && state !== 'off')) fail('fault needs a NAME and on|off');
    await setFault(node, /** @type {string} */ (name), state === 'on');
    process.stdout.write(`${name} ${state}\n`);
  } else if (command === 'ha-delay') {
    const [value] = rest;
    if (value !== 'never' && !/^\d+$/.test(value ?? '')) fail('ha-delay needs SECONDS or never');
    updateLabState(node, (s) => ({ ...s, haDelayS: value === 'never' ? null : Number(value) }));
    process.stdout.write(`the lab's HA manager acts ${value === 'never' ? 'never' : `${value} s after a request`}\n`);
  } else {
    fail(`unknown command '${command}'`);
  }
} catch (error) {
  fail(/** @type {Error} */ (error).message);
}
