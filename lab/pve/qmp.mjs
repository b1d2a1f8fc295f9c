// @ts-check
// A minimal client for QEMU's two JSON sockets, each call under its own deadline:
//   QMP (the monitor): greeting, qmp_capabilities, then one command (or a queue of them, as
//   qemu-server's vmstatus sends: whatever answered before a timeout or error is kept);
//   QGA (the guest agent over virtio-serial): guest-sync-delimited, then one command.
// Both sockets serve one client at a time, so every call connects, asks and closes.

import net from 'node:net';

export class SocketTimeout extends Error {}
export class CommandError extends Error {}

/**
 * Sends `messages` one at a time after `greeting` lines arrive; resolves with every reply, in
 * order. With `partial`, a timeout or an error reply ends the queue and resolves with the replies
 * so far instead of rejecting.
 * @param {string} socketPath
 * @param {{ greeting: boolean, messages: object[], timeoutMs: number, sentinel?: boolean, partial?: boolean }} opts
 * @returns {Promise<unknown[]>}
 */
function converse(socketPath, { greeting, messages, timeoutMs, sentinel = false, partial = false }) {
  return new Promise((resolve, reject) => {
    /** @type {net.Socket | null} */
    let socket = null;
    let buffer = '';
    let step = greeting ? -1 : 0;
    let settled = false;
    /** @type {unknown[]} */
    const replies = [];
    const timer = setTimeout(() => finish(new SocketTimeout('got timeout')), timeoutMs);
    /** @param {unknown} [error] */
    function finish(error) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket?.destroy();
      if (error && !partial) reject(error);
      else resolve(replies);
    }
    // Each QMP command carries an id and only its own reply counts: after a blocked main loop
    // resumes, replies meant for earlier, abandoned clients can still arrive (qemu-server's
    // client matches ids the same way). The agent has no ids; guest-sync-delimited does that.
    const tag = `bg-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    const send = () => socket?.write(`${JSON.stringify(greeting ? { ...messages[step], id: `${tag}-${step}` } : messages[step])}\n`);
    function onData(/** @type {Buffer} */ chunk) {
      // guest-sync-delimited: the agent sends 0xFF before its reply so stale bytes can be skipped.
      buffer += sentinel ? chunk.toString('latin1').replace(/\xff/g, '') : chunk.toString('utf8');
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        let message;
        try {
          message = JSON.parse(line);
        } catch {
          continue;
        }
        if ('event' in message) continue;
        if (step === -1) {
          if ('QMP' in message) {
            step = 0;
            send();
          }
          continue;
        }
        if (greeting && message.id !== `${tag}-${step}`) continue;
        if ('error' in message) return finish(new CommandError(message.error.desc ?? JSON.stringify(message.error)));
        if (!('return' in message)) continue;
        replies.push(message.return);
        step++;
        if (step === messages.length) return finish();
        send();
      }
    }
    // Like Proxmox's QMP client: a socket whose backlog is full (EAGAIN: the QEMU behind it is
    // not accepting) is tried again every 100 ms until the deadline; other errors end the call.
    function attempt() {
      let connected = false;
      socket = net.connect(socketPath);
      socket.on('connect', () => {
        connected = true;
        if (step === 0) send();
      });
      socket.on('error', (/** @type {NodeJS.ErrnoException} */ error) => {
        if (!connected && error.code === 'EAGAIN' && !settled) {
          socket?.destroy();
          setTimeout(() => {
            if (!settled) attempt();
          }, 100);
          return;
        }
        finish(error);
      });
      socket.on('close', () => {
        if (connected) finish(new CommandError('connection closed before the reply'));
      });
      socket.on('data', onData);
    }
    attempt();
  });
}

/** One QMP command (after qmp_capabilities): its reply. */
export async function qmp(/** @type {string} */ socketPath, /** @type {string} */ execute, args = {}, timeoutMs = 3000) {
  const replies = await converse(socketPath, {
    greeting: true,
    messages: [{ execute: 'qmp_capabilities' }, { execute, ...(Object.keys(args).length ? { arguments: args } : {}) }],
    timeoutMs,
  });
  return replies[1];
}

/**
 * Several QMP commands over one connection under one deadline: the replies that came, in order
 * (shorter than `commands` when QEMU stopped answering or refused one; never rejects).
 */
export async function qmpQueue(/** @type {string} */ socketPath, /** @type {string[]} */ commands, timeoutMs = 3000) {
  const replies = await converse(socketPath, {
    greeting: true,
    partial: true,
    messages: [{ execute: 'qmp_capabilities' }, ...commands.map((execute) => ({ execute }))],
    timeoutMs,
  });
  return replies.slice(1);
}

/** One guest agent command, after the agent proves it is in sync with us. */
export async function qga(/** @type {string} */ socketPath, /** @type {string} */ execute, args = {}, timeoutMs = 3000) {
  const id = Math.floor(Math.random() * 2 ** 31);
  const replies = await converse(socketPath, {
    greeting: false,
    sentinel: true,
    messages: [{ execute: 'guest-sync-delimited', arguments: { id } }, { execute, ...(Object.keys(args).length ? { arguments: args } : {}) }],
    timeoutMs,
  });
  return replies[1];
}
