// A worker in Node.js with the npm `redis` package, following the take / do / notify
// protocol.
//
//     cd examples/workers && npm install && node node_worker.js REDIS_URL PROCESS_ID
//
// It works on the tasks that configs/example.hjson makes for one process id: takes each
// from trt/<id>/todo-queue, removes it from the dedup set, "does" it, then notifies
// global/events that it is done. Stop it with Ctrl-C or SIGTERM: it finishes the task in
// hand first.
'use strict';

const { createClient } = require('redis');

async function main(url, processId) {
  const queue = `trt/${processId}/todo-queue`;
  const taken = `trt/${processId}/taken`;
  const todoSet = `trt/${processId}/todo-set`;

  let stopping = false;
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => { stopping = true; });
  }

  const client = createClient({ url });
  client.on('error', (err) => console.error('redis:', err.message));
  await client.connect();

  // Tasks left in the taken list by a previous run of this worker go back to the queue.
  while ((await client.lMove(taken, queue, 'LEFT', 'RIGHT')) !== null) { /* again */ }

  while (!stopping) {
    // 1. Take atomically: the task is always in the queue or in the taken list. Waiting
    //    1 s at most lets the loop see a stop request.
    const task = await client.blMove(queue, taken, 'RIGHT', 'LEFT', 1);
    if (task === null) continue;
    // 2. Deduplicated queue: allow the task to be queued again while it runs.
    await client.zRem(todoSet, task);
    // 3. Do the work.
    console.log(`working on ${task}`);
    // 4. Notify: the finished task is itself an event, and rules may react to it.
    // 5. Remove it from the taken list. MULTI/EXEC makes 4 and 5 one step.
    await client.multi().lPush('global/events', task).lRem(taken, 1, task).exec();
  }
  await client.quit();
}

main(process.argv[2], process.argv[3]).catch((err) => {
  console.error(err);
  process.exit(1);
});
