/* The test call page (/admin/test-call/, docs/test-call.md).
 *
 * Start: the portal mints a token (token.json: the token path's own service, under the chosen
 * API client), this page joins the room with livekit-client (vendored, window.LivekitClient),
 * optionally publishes the microphone, and shows each step with its time since Start:
 * token minted (rules, agents) -> joined -> per agent: dispatch -> job (from the ledger, polled
 * through room.json) -> agent present (seen in the room) -> its audio playing, speaking, level.
 * An agent already in the room when the page joins raises no ParticipantConnected event: the
 * page walks room.remoteParticipants after connecting as well as listening.
 * An expected agent not present within its join deadline, or one the ledger gave up on, gets
 * a "why not?" link to the doctor for that room and agent.
 */
(function () {
  "use strict";
  const LK = window.LivekitClient;
  const form = document.getElementById("call-form");
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 1000;
  const SPEAKING_LEVEL = 0.01; // RMS of what this browser receives, 0..1

  let call = null; // the call in progress

  /* "+1.234 s" after Start; "-4.382 s" for what happened before it (an agent already there). */
  function secondsSince(start, now) {
    const seconds = (now - start) / 1000;
    return (seconds < 0 ? "-" : "+") + Math.abs(seconds).toFixed(3) + " s";
  }

  function log(text) {
    const li = document.createElement("li");
    li.textContent = (call ? secondsSince(call.t0, performance.now()) + "  " : "") + text;
    $("call-log").append(li);
  }

  /* One step: <li data-step=key class="tc-{state}"> time, mark, label, detail. */
  function step(list, key, label) {
    let li = list.querySelector(`:scope > li[data-step="${key}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.step = key;
      li.className = "tc-waiting";
      li.innerHTML = '<span class="tc-time">-</span><span class="tc-mark"></span> <span class="tc-label"></span><div class="tc-detail"></div>';
      li.querySelector(".tc-label").textContent = label;
      list.append(li);
    }
    return {
      li,
      set(state, atMs, detail) {
        li.className = "tc-" + state;
        if (atMs !== null && atMs !== undefined) li.querySelector(".tc-time").textContent = secondsSince(call.t0, atMs);
        if (detail !== undefined) li.querySelector(".tc-detail").textContent = detail;
      },
      get state() {
        return li.className.replace("tc-", "");
      },
    };
  }

  /* A server time (ISO) on this page's clock: anchored at the mint, the one moment both know. */
  function serverMs(iso) {
    return call.mintedMs + (Date.parse(iso) - Date.parse(call.minted.minted_at));
  }

  function agentBox(name) {
    let box = call.agents.get(name);
    if (box) return box;
    const section = document.createElement("div");
    section.className = "tc-agent module";
    section.dataset.agent = name;
    const h3 = document.createElement("h3");
    h3.textContent = "Agent " + (name || "(unnamed)");
    const note = document.createElement("p");
    note.className = "help";
    note.textContent = "Dispatch and job: from the portal's ledger, timed when the portal recorded them (on the token path LiveKit dispatches at the join, and the portal may hear of it after the agent is present). Present and audio: what this browser sees.";
    const steps = document.createElement("ol");
    steps.className = "tc-steps";
    section.append(h3, note, steps);
    $("call-agents").append(section);
    box = { name, section, steps, expected: null, present: null, ended: false };
    step(steps, "dispatch", "Dispatch");
    step(steps, "job", "Job assigned to a worker");
    step(steps, "present", "Agent present in the room");
    step(steps, "audio", "Agent's audio");
    call.agents.set(name, box);
    return box;
  }

  function whyNot(box, reason) {
    if (box.present || box.section.querySelector(".tc-why-not")) return;
    const url = (box.expected && box.expected.doctor_url) || call.minted.doctor_url;
    const div = document.createElement("div");
    div.className = "tc-why-not";
    div.append(document.createTextNode(reason + " "));
    const a = document.createElement("a");
    a.href = url;
    a.className = "why-not";
    a.target = "_blank";
    a.textContent = "why not? (the doctor)";
    div.append(a);
    box.section.append(div);
    log(`${box.name}: ${reason}`);
  }

  /* --- the ledger, as room.json reads it -------------------------------------------------- */

  function ledgerApply(body) {
    for (const row of body.agents) {
      const box = agentBox(row.agent_name);
      const byKey = Object.fromEntries(row.steps.map((s) => [s.key, s]));
      const trigger = byKey.trigger, requested = byKey.requested, job = byKey.job_assigned;
      const dispatch = step(box.steps, "dispatch");
      if (trigger && trigger.at && dispatch.state === "waiting") {
        dispatch.set("done", serverMs(trigger.at), "");
        log(`${row.agent_name}: dispatch #${row.dispatch_id} in the ledger (${trigger.label})`);
      }
      if (trigger && trigger.at) {
        let detail = `#${row.dispatch_id} (${trigger.label}${trigger.detail ? ", " + trigger.detail : ""}): `;
        if (requested && requested.state === "done") {
          const how = row.delivery === "token" ? "LiveKit's dispatch from the token" : "CreateDispatch";
          detail += `${how}: ${requested.detail} at ${secondsSince(call.t0, serverMs(requested.at))}`;
        } else if (requested && requested.state === "skipped") {
          detail += requested.detail;
        } else {
          detail += "waiting to be requested";
        }
        detail += `; status: ${row.status_label}`;
        dispatch.li.querySelector(".tc-detail").textContent = detail;
      }
      const jobStep = step(box.steps, "job");
      if (job && job.state === "done" && jobStep.state !== "done") {
        jobStep.set("done", serverMs(job.at), job.detail);
        log(`${row.agent_name}: job ${job.detail} assigned (ledger)`);
      } else if (job && job.state === "skipped") {
        jobStep.set("skipped", null, "");
      }
      const verdict = byKey.verdict;
      if (verdict && !box.ended) {
        box.ended = true;
        step(box.steps, "present").set("failed", verdict.at ? serverMs(verdict.at) : null, verdict.label + (verdict.detail ? ": " + verdict.detail : ""));
        whyNot(box, `The ledger gave up on ${row.agent_name}: ${verdict.label}.`);
      }
      const joined = byKey.joined;
      if (joined && joined.state === "done") box.ledgerJoined = `ledger: joined as ${joined.detail} at ${secondsSince(call.t0, serverMs(joined.at))}`;
      if (box.present && box.ledgerJoined) step(box.steps, "present").li.querySelector(".tc-detail").textContent = box.present + "; " + box.ledgerJoined;
    }
  }

  async function poll() {
    const mine = call;
    if (!mine) return;
    const url = `${form.dataset.roomUrl}?` + new URLSearchParams({ client: call.minted.client.id, room: call.minted.room_name });
    try {
      const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (answer.ok) ledgerApply(await answer.json());
      else log(`room.json answered ${answer.status}`);
    } catch (err) {
      log("room.json: " + err);
    }
    if (call === mine) call.pollTimer = setTimeout(poll, POLL_MS);
  }

  /* --- the room, as this browser sees it ---------------------------------------------------- */

  function agentNameOf(participant) {
    const a = participant.attributes || {};
    return a["lk.agent_name"] ?? a["lk.agent.name"] ?? "";
  }

  function agentPresent(participant, how) {
    if (!participant.isAgent) return;
    const name = agentNameOf(participant);
    const box = agentBox(name);
    if (box.present) return;
    box.present = `${participant.identity} ${how}`;
    box.participant = participant;
    step(box.steps, "present").set("done", performance.now(), box.present + (box.ledgerJoined ? "; " + box.ledgerJoined : ""));
    const why = box.section.querySelector(".tc-why-not");
    if (why) why.remove();
    log(`${name}: ${participant.identity} present (${how})`);
    for (const pub of participant.audioTrackPublications.values()) {
      if (pub.track) audioAttach(pub.track, participant);
    }
    participant.on(LK.ParticipantEvent.IsSpeakingChanged, (speaking) => speakingShow(box, speaking));
  }

  /* The sign is on while LiveKit calls the agent an active speaker (its signal reaches a page
     that joined late only when the speaker set changes) or this browser hears it. */
  function speakingShow(box, speaking) {
    if (box.livekitSpeaking !== speaking) log(`${box.name}: ${speaking ? "speaking" : "stopped speaking"} (LiveKit)`);
    box.livekitSpeaking = speaking;
    signShow(box);
  }

  function signShow(box) {
    const sign = box.section.querySelector(".tc-speaking");
    if (!sign) return;
    const on = Boolean(box.livekitSpeaking || box.heard);
    sign.classList.toggle("tc-on", on);
    sign.textContent = on ? "speaking" : "silent";
  }

  function audioAttach(track, participant) {
    if (track.kind !== "audio" || !participant.isAgent) return;
    const box = agentBox(agentNameOf(participant));
    if (box.audio) return;
    const element = track.attach();
    element.dataset.agent = box.name;
    element.className = "agent-audio";
    element.controls = true;
    box.audio = element;
    $("call-audio").append(element);
    const audio = step(box.steps, "audio");
    audio.set("waiting", performance.now(), `track ${track.sid} subscribed; waiting for it to play`);
    const meter = document.createElement("span");
    meter.innerHTML = ' <span class="tc-speaking">silent</span> level <meter class="tc-level" min="0" max="1" value="0"></meter> <span class="tc-level-value">0.000</span>';
    audio.li.append(meter);
    element.addEventListener("playing", () => {
      audio.set("done", performance.now(), `playing track ${track.sid} from ${participant.identity}`);
      log(`${box.name}: audio playing`);
    });
    speakingShow(box, participant.isSpeaking);
    levelWatch(box, track, audio.li);
    log(`${box.name}: audio track ${track.sid} subscribed`);
  }

  /* The level this browser receives: RMS of the agent's track through an AnalyserNode. */
  function levelWatch(box, track, li) {
    if (!call.audioContext) return;
    const source = call.audioContext.createMediaStreamSource(new MediaStream([track.mediaStreamTrack]));
    const analyser = call.audioContext.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const meter = li.querySelector(".tc-level");
    const value = li.querySelector(".tc-level-value");
    box.levelTimer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const rms = Math.sqrt(sum / samples.length);
      meter.value = Math.min(1, rms * 4);
      value.textContent = rms.toFixed(3);
      box.heard = rms > SPEAKING_LEVEL;
      signShow(box);
    }, 100);
  }

  /* --- start and hang up ---------------------------------------------------------------------- */

  function fail(message) {
    $("call-error").hidden = false;
    $("call-error").textContent = message;
    log(message);
  }

  function errorText(status, body) {
    if (body && body.detail && typeof body.detail === "object") {
      return `${status}: ` + Object.entries(body.detail).map(([field, messages]) => `${field}: ${[].concat(messages).map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join(" ")}`).join("; ");
    }
    return `${status}: ${(body && body.detail) || "the portal refused the token"}`;
  }

  async function start(event) {
    event.preventDefault();
    await hangUp();
    $("call-error").hidden = true;
    $("call-steps").replaceChildren();
    $("call-agents").replaceChildren();
    $("call-audio").replaceChildren();
    $("call-log").replaceChildren();
    $("call-progress").hidden = false;
    $("call-log-box").hidden = false;
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    call = { t0: performance.now(), agents: new Map(), timers: [], audioContext: AudioContextClass ? new AudioContextClass() : null };
    $("call-start").disabled = true;
    $("call-hangup").disabled = false;
    const minted = step($("call-steps"), "minted", "Token minted");
    const body = { client: $("id_client").value, room_name: $("id_room").value, participant_identity: $("id_identity").value };
    let answer, data;
    try {
      answer = await fetch(form.dataset.tokenUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value },
        body: JSON.stringify(body),
      });
      data = await answer.json();
    } catch (err) {
      minted.set("failed", performance.now(), String(err));
      fail("The portal did not answer: " + err);
      return endCall();
    }
    if (answer.status !== 201) {
      minted.set("failed", performance.now(), errorText(answer.status, data));
      fail("No token: " + errorText(answer.status, data));
      return endCall();
    }
    call.minted = data;
    call.mintedMs = performance.now();
    $("call-title").textContent = `Test call: ${data.participant_identity} in ${data.room_name}, as client ${data.client.name}`;
    const agents = data.agents.map((a) => `${a.agent_name} (rule ${a.rule === "client" ? "none: asked for by the client" : "'" + a.rule + "'"}, ${a.delivery === "token" ? "in the token" : "explicit dispatch"})`);
    minted.set("done", call.mintedMs, agents.length ? "agents: " + agents.join(", ") + (data.room_exists ? "; the room is already live, so LiveKit would ignore a token's agents: the portal dispatches any that are missing" : "") : "no rule gives this room and identity an agent");
    log(`token minted for ${data.participant_identity} in ${data.room_name}: ${agents.join(", ") || "no agent"}`);
    if (!data.agents.length) {
      const div = document.createElement("div");
      div.className = "tc-why-not";
      div.id = "no-agent";
      div.innerHTML = 'No agent will come: no rule gives this room an agent for this identity. <a class="explain-link" target="_blank">Explain the rules</a> · <a class="why-not" target="_blank">the doctor</a>';
      div.querySelector(".explain-link").href = data.explain_url;
      div.querySelector(".why-not").href = data.doctor_url;
      minted.li.append(div);
    }
    for (const expected of data.agents) agentBox(expected.agent_name).expected = expected;
    await join(data);
  }

  async function join(data) {
    const joined = step($("call-steps"), "joined", "Joined the room");
    const room = new LK.Room();
    call.room = room;
    room.on(LK.RoomEvent.ParticipantConnected, (p) => agentPresent(p, "joined after this page"));
    room.on(LK.RoomEvent.ParticipantDisconnected, (p) => {
      if (!p.isAgent) return;
      const box = call && call.agents.get(agentNameOf(p));
      if (box && box.participant === p) {
        const detail = step(box.steps, "present").li.querySelector(".tc-detail");
        detail.textContent += `; left the room at ${secondsSince(call.t0, performance.now())}`;
      }
      log(`${agentNameOf(p)}: ${p.identity} left the room`);
    });
    room.on(LK.RoomEvent.TrackSubscribed, (track, _pub, p) => audioAttach(track, p));
    room.on(LK.RoomEvent.AudioPlaybackStatusChanged, () => {
      // The browser refused to play without a click on the page: offer one.
      if (room.canPlaybackAudio || $("call-allow-audio")) return;
      const button = document.createElement("button");
      button.type = "button";
      button.id = "call-allow-audio";
      button.textContent = "Play the agent's audio";
      button.addEventListener("click", () => room.startAudio().then(() => button.remove()));
      $("call-audio").prepend(button);
      log("the browser blocked audio playback until a click");
    });
    room.on(LK.RoomEvent.Disconnected, (reason) => log("disconnected from the room (" + reason + ")"));
    try {
      await room.connect(data.server_url, data.participant_token);
    } catch (err) {
      joined.set("failed", performance.now(), String(err));
      fail("Could not join the room: " + err);
      return endCall();
    }
    joined.set("done", performance.now(), `as ${room.localParticipant.identity} (room ${room.name}, server ${data.server_url})`);
    log(`joined ${room.name}`);
    // An agent that joined before this page raises no ParticipantConnected: look.
    for (const p of room.remoteParticipants.values()) agentPresent(p, "was already in the room");
    for (const box of call.agents.values()) {
      if (!box.expected) continue;
      const seconds = box.expected.expected_within_s;
      call.timers.push(setTimeout(() => whyNot(box, `${box.name} has not come within ${seconds} s (its join deadline).`), seconds * 1000));
    }
    poll();
    if ($("id_microphone").checked) {
      const mic = step($("call-steps"), "microphone", "Microphone published");
      try {
        await room.localParticipant.setMicrophoneEnabled(true);
        mic.set("done", performance.now(), "");
      } catch (err) {
        mic.set("failed", performance.now(), String(err));
      }
    }
  }

  function endCall() {
    $("call-start").disabled = false;
    $("call-hangup").disabled = true;
  }

  async function hangUp() {
    if (!call) return;
    const ending = call;
    call = null;
    clearTimeout(ending.pollTimer);
    ending.timers.forEach(clearTimeout);
    for (const box of ending.agents.values()) clearInterval(box.levelTimer);
    if (ending.room) await ending.room.disconnect();
    if (ending.audioContext) ending.audioContext.close();
    endCall();
  }

  form.addEventListener("submit", start);
  $("call-hangup").addEventListener("click", hangUp);
  window.testCall = { get current() { return call; } }; // for a look from the console
})();
