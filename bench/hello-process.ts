/**
 * The footprint baseline: the smallest TypeScript HTTP service started the same way as the
 * product process (node --import tsx), answering /readyz. argv[2]: the port.
 */
import { createServer } from 'node:http';

const port = Number(process.argv[2]);
const server = createServer((request, response) => {
  response.writeHead(request.url === '/readyz' ? 200 : 404, { 'content-type': 'application/json' });
  response.end(JSON.stringify({ ready: request.url === '/readyz' }));
});
server.listen(port, '127.0.0.1');
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 1_000).unref();
process.on('SIGTERM', () => server.close(() => process.exit(0)));
