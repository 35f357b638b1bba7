// A worker in Node.js with the npm `redis` package, following the take / do / notify
// protocol.
//
//     cd examples/workers && npm install && node node_worker.js REDIS_URL PROCESS_ID
//
// It works on the tasks that configs/example.hjson makes for one process id: takes each
// from trt/<id>/todo-queue, removes it from the dedup set, "does" it, then notifies
// global/events that it is done. It waits out Redis restarts and failovers. Stop it with
// Ctrl-C or SIGTERM: it finishes the task in hand first.
'use strict';

const {
  createClient, ConnectionTimeoutError, ErrorReply, SocketClosedUnexpectedlyError,
  SocketTimeoutError,
} = require('redis');

// A take waits this long at most, then asks again: the loop sees a stop request, and
// the socket timeout below can stay short enough to notice a frozen server.
const TAKE_BLOCK_S = 1;
// After a lost connection: wait 0.1 s, then twice as long each time, up to 5 s.
const FIRST_DELAY_MS = 100;
const MAX_DELAY_MS = 5000;

let stopping = false;
let wakeUp = () => {};
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => { stopping = true; wakeUp(); });
}

function sleep(ms) {  // cut short by a stop request
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wakeUp = () => { clearTimeout(timer); resolve(); };
  });
}

// Errors that mean "this server cannot serve us now": wait and connect again. Any other
// error (a key of the wrong type, a wrong password) is a mistake to show, not to wait out.
function isLost(err) {
  if (err instanceof SocketClosedUnexpectedlyError || err instanceof ConnectionTimeoutError
      || err instanceof SocketTimeoutError || 'syscall' in err) {  // closed, refused, frozen
    return true;
  }
  // A failover: the server became a replica (READONLY), or it was one when it dropped
  // our blocked take (UNBLOCKED), or it is loading its data.
  return /^(READONLY|UNBLOCKED|LOADING)/.test(err.message);
}

async function putBack(client, queue, taken) {
  // The taken list holds what this worker took and did not notify: tasks of an earlier
  // run, and after a lost connection the task in hand, whose notice may not have been
  // sent. Back into the queue with them, to be done again: the notice below removes a
  // task from the taken list in the same step, so a task still there was not notified.
  while ((await client.lMove(taken, queue, 'LEFT', 'RIGHT')) !== null) { /* again */ }
}

async function work(client, queue, taken, todoSet) {
  while (!stopping) {
    // 1. Take atomically: the task is always in the queue or in the taken list.
    const task = await client.blMove(queue, taken, 'RIGHT', 'LEFT', TAKE_BLOCK_S);
    if (task === null) continue;
    // 2. Deduplicated queue: allow the task to be queued again while it runs.
    await client.zRem(todoSet, task);
    // 3. Do the work.
    console.log(`working on ${task}`);
    // 4. Notify: the finished task is itself an event, and rules may react to it.
    // 5. Remove it from the taken list. MULTI/EXEC makes 4 and 5 one step.
    await client.multi().lPush('global/events', task).lRem(taken, 1, task).exec();
  }
}

async function main(url, processId) {
  const queue = `trt/${processId}/todo-queue`;
  const taken = `trt/${processId}/taken`;
  const todoSet = `trt/${processId}/todo-set`;

  let delayMs = FIRST_DELAY_MS;
  let lost = false;
  while (!stopping) {
    const client = createClient({
      url,
      // No automatic reconnection and no queue of commands to send later: a command in
      // flight when the connection broke may have run (a take, a notice), and sending it
      // again would take a second task or notify twice. This loop connects again itself
      // and trusts the taken list instead.
      socket: {
        reconnectStrategy: false,
        connectTimeout: 5000,
        socketTimeout: (TAKE_BLOCK_S + 5) * 1000,  // longer than a take blocks
      },
      disableOfflineQueue: true,
    });
    client.on('error', () => {});  // the failing command reports it
    try {
      await client.connect();
      await putBack(client, queue, taken);
      if (lost) console.error('node_worker: Redis is back');
      lost = false;
      delayMs = FIRST_DELAY_MS;
      await work(client, queue, taken, todoSet);
      return;
    } catch (err) {
      if (!isLost(err)) throw err;
      if (!lost) console.error(`node_worker: Redis unavailable, retrying (${err.message})`);
      lost = true;
      // Jitter: workers that lost the same server do not all come back at one instant.
      await sleep(delayMs * (0.5 + Math.random() / 2));
      delayMs = Math.min(delayMs * 2, MAX_DELAY_MS);
    } finally {
      if (client.isOpen) client.destroy();
    }
  }
}

if (process.argv.length !== 4) {
  console.error('usage: node node_worker.js REDIS_URL PROCESS_ID');
  process.exit(2);
}
main(process.argv[2], process.argv[3]).catch((err) => {
  const refused = err instanceof ErrorReply ? 'Redis refused a command: ' : '';
  console.error(`node_worker: ${refused}${err.message}`);
  process.exit(1);
});
