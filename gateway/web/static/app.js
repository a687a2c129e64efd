// sipgw softphone: the browser side of the protocol in docs/protocol.md.
// Plain script, no build step. One gateway connection, at most one call at a time.
'use strict';

(() => {
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const WELCOME_TIMEOUT_MS = 10000;
  // Non-trickle: the SIP side needs every candidate in the offer, but a stuck gatherer
  // (an unreachable STUN/TURN server) must not hold the call up for long.
  const ICE_GATHER_TIMEOUT_MS = 2000;
  const RINGBACK_HZ = [425];
  const RINGBACK_ON_S = 1;
  const RINGBACK_PERIOD_MS = 5000;
  const DTMF_HZ = {
    1: [697, 1209], 2: [697, 1336], 3: [697, 1477],
    4: [770, 1209], 5: [770, 1336], 6: [770, 1477],
    7: [852, 1209], 8: [852, 1336], 9: [852, 1477],
    '*': [941, 1209], 0: [941, 1336], '#': [941, 1477],
  };
  const MESSAGE_LOG_MAX = 200;
  // Error codes that refuse one request about a call without ending it.
  const NON_FATAL_ERRORS = new Set(['bad-state']);

  const $ = (id) => document.getElementById(id);
  const ui = {
    connection: $('connection'),
    connectionText: $('connection-text'),
    number: $('number'),
    backspace: $('backspace'),
    state: $('state'),
    dtmfSent: $('dtmf-sent'),
    lastCall: $('last-call'),
    demoHint: $('demo-hint'),
    reason: $('reason'),
    reasonHolder: $('reason-holder'),
    notice: $('notice'),
    noticeText: $('notice-text'),
    noticeClose: $('notice-close'),
    mute: $('mute'),
    muteLabel: $('mute-label'),
    level: $('level'),
    levelBar: document.querySelector('#level .level-bar'),
    call: $('call'),
    hangup: $('hangup'),
    audio: $('remote-audio'),
    keys: document.querySelectorAll('button.key'),
  };

  // ---------------------------------------------------------------- shared state

  const gateway = {
    socket: null,
    session: null,
    iceServers: [],
    demo: null, // {echo, tone} extensions when the gateway runs its built-in demo endpoint
    welcomed: false,
    attempts: 0,
    retryAt: 0,
    retryTimer: null,
    countdownTimer: null,
    welcomeTimer: null,
  };

  let phoneState = 'connecting';
  let call = null; // the call in progress, or null
  let shownCall = null; // the call whose objects window.softphone exposes: current or last
  let noticeKind = null;
  let audioCtx = null;
  let ringback = null;
  let meter = null;
  let clockTimer = null;

  const history = [];
  const messages = [];

  // Test and debugging hook; the getters keep it current without bookkeeping at every change.
  const softphone = {
    get pc() { return shownCall ? shownCall.pc : null; },
    get localStream() { return shownCall ? shownCall.localStream : null; },
    get remoteStream() { return shownCall ? shownCall.remoteStream : null; },
    get socket() { return gateway.socket; },
    get state() { return phoneState; },
    get callId() { return call ? call.id : null; },
    get session() { return gateway.session; },
    get ringback() { return ringback !== null; },
    get muted() { return call ? call.muted : false; },
    history,
    messages,
  };
  window.softphone = softphone;

  // ---------------------------------------------------------------- the call

  class Call {
    constructor(id, direction, number) {
      this.id = id;
      this.direction = direction; // 'outbound'; 'inbound' arrives with issue 3
      this.number = number;
      this.state = 'calling';
      this.pc = null;
      this.localStream = null;
      this.remoteStream = null;
      this.sent = false; // the gateway knows this id
      this.remoteSdp = null;
      this.earlyMedia = false;
      this.muted = false;
      this.connectedAt = 0;
      this.ended = false;
      this.dtmf = '';
      // Candidates can arrive before the answer; addIceCandidate needs a remote description.
      this.remoteReady = new Promise((resolve) => { this.markRemoteReady = resolve; });
    }

    get active() { return !this.ended; }

    // The gateway relays DTMF (SIP INFO) only in an established dialog, not during early media.
    canSendDtmf() {
      return this.sent && !this.ended && this.state === 'connected';
    }
  }

  function newId() {
    if (window.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  async function startCall() {
    if (call || !gateway.welcomed) return;
    const to = ui.number.value.trim();
    if (!to) {
      ui.number.focus();
      flash(ui.number);
      return;
    }
    hideNotice();
    const c = new Call(newId(), 'outbound', to);
    call = c;
    shownCall = c;
    ui.dtmfSent.textContent = '';
    setState('calling');
    unlockAudio(); // inside the click/keypress, so autoplay rules allow it

    let stream;
    try {
      stream = await getMicrophone();
    } catch (err) {
      const problem = microphoneProblem(err);
      showNotice(problem.message, 'microphone');
      endCall(c, { reason: problem.reason });
      return;
    }
    if (c.ended) {
      stopStream(stream);
      return;
    }
    c.localStream = stream;
    startMeter(stream);

    const pc = new RTCPeerConnection({ iceServers: gateway.iceServers });
    c.pc = pc;
    pc.ontrack = (event) => {
      const remote = event.streams[0] || new MediaStream([event.track]);
      c.remoteStream = remote;
      if (c.ended) return;
      // Chromium only feeds WebAudio from a remote track that also plays in a media element.
      ui.audio.srcObject = remote;
      ui.audio.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed' && !c.ended) {
        send({ type: 'hangup', id: c.id });
        endCall(c, { reason: 'Media connection failed' });
      }
    };
    for (const track of stream.getTracks()) pc.addTrack(track, stream);

    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringDone(pc, ICE_GATHER_TIMEOUT_MS);
    } catch (err) {
      if (!c.ended) {
        console.warn('sipgw: could not create the offer', err);
        showNotice('The browser could not prepare the call (' + err.message + ').', 'call');
        endCall(c, { reason: 'Could not create the offer' });
      }
      return;
    }
    if (c.ended) return;
    if (!send({ type: 'call', id: c.id, to, sdp: pc.localDescription.sdp })) {
      endCall(c, { reason: 'Not connected to the gateway' });
      return;
    }
    c.sent = true;
  }

  function iceGatheringDone(pc, timeoutMs) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', onState);
        pc.removeEventListener('icecandidate', onCandidate);
        resolve();
      };
      const onState = () => { if (pc.iceGatheringState === 'complete') finish(); };
      const onCandidate = (event) => { if (!event.candidate) finish(); };
      const timer = setTimeout(finish, timeoutMs);
      pc.addEventListener('icegatheringstatechange', onState);
      pc.addEventListener('icecandidate', onCandidate);
    });
  }

  async function getMicrophone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      const err = new Error('getUserMedia is not available');
      err.name = 'InsecureContext';
      throw err;
    }
    return navigator.mediaDevices.getUserMedia({ audio: true });
  }

  function microphoneProblem(err) {
    switch (err && err.name) {
      case 'NotAllowedError':
      case 'SecurityError':
        return {
          reason: 'Microphone blocked',
          message: 'Microphone access was refused. Allow the microphone for this page in '
            + 'the browser\u2019s site settings, then call again.',
        };
      case 'NotFoundError':
      case 'OverconstrainedError':
        return {
          reason: 'No microphone found',
          message: 'No microphone was found. Connect one, then call again.',
        };
      case 'NotReadableError':
      case 'AbortError':
        return {
          reason: 'Microphone unavailable',
          message: 'The microphone could not be started: another application may be using it.',
        };
      case 'InsecureContext':
        return {
          reason: 'Microphone unavailable',
          message: 'This page cannot use the microphone: open it over https.',
        };
      default:
        return {
          reason: 'Microphone unavailable',
          message: 'The microphone could not be opened' + (err && err.message ? ': ' + err.message : '.'),
        };
    }
  }

  // Applies the gateway's SDP once; a second, different answer (a forked or re-sent 200 after
  // early media) would need a renegotiation the gateway does not do yet, so it is ignored.
  async function applyRemoteDescription(c, type, sdp) {
    if (typeof sdp !== 'string' || !sdp) return;
    if (c.remoteSdp !== null) {
      if (c.remoteSdp !== sdp) console.info('sipgw: call %s: ignoring a different %s SDP', c.id, type);
      return;
    }
    c.remoteSdp = sdp;
    try {
      await c.pc.setRemoteDescription({ type, sdp });
      c.markRemoteReady();
    } catch (err) {
      if (c.ended) return;
      console.warn('sipgw: call %s: unusable %s SDP', c.id, type, err);
      send({ type: 'hangup', id: c.id });
      showNotice('The gateway\u2019s answer could not be used (' + err.message + ').', 'call');
      endCall(c, { reason: 'Unusable answer' });
    }
  }

  function hangup() {
    const c = call;
    if (!c) return;
    if (c.sent) send({ type: 'hangup', id: c.id });
    endCall(c, { reason: c.state === 'connected' ? 'Hung up' : 'Cancelled', failed: false });
  }

  // The one way out of a call: every path (either side hangs up, error, socket loss,
  // microphone refused) releases the microphone, the peer connection and the timers here.
  // `failed` colours the outcome: a busy callee or a lost link, not a normal goodbye.
  function endCall(c, { reason, code = null, error = null, failed = true }) {
    if (c.ended) return;
    c.ended = true;
    const duration = c.connectedAt ? performance.now() - c.connectedAt : 0;
    stopRingback();
    stopClock();
    stopMeter();
    stopStream(c.localStream);
    if (c.pc) {
      try { c.pc.close(); } catch (err) { /* already closed */ }
    }
    ui.audio.srcObject = null;
    if (call === c) call = null;

    ui.reason.textContent = reason;
    ui.reason.dataset.code = code === null || code === undefined ? '' : String(code);
    if (error) ui.reason.dataset.error = error;
    else delete ui.reason.dataset.error;
    ui.state.classList.toggle('failed', failed);
    ui.lastCall.textContent = 'Call to ' + c.number + (duration ? ' \u00b7 ' + formatDuration(duration) : '');
    c.state = 'ended';
    setState('ended');
  }

  function stopStream(stream) {
    if (stream) for (const track of stream.getTracks()) track.stop();
  }

  function toggleMute() {
    const c = call;
    if (!c || !c.localStream) return;
    c.muted = !c.muted;
    for (const track of c.localStream.getAudioTracks()) track.enabled = !c.muted;
    render();
  }

  function pressDigit(digit) {
    flashKey(digit);
    if (call) {
      if (!call.canSendDtmf()) return;
      send({ type: 'dtmf', id: call.id, digits: digit });
      call.dtmf += digit;
      ui.dtmfSent.textContent = call.dtmf.slice(-16);
      playDtmfFeedback(digit);
      render();
      return;
    }
    insertIntoNumber(digit);
  }

  function insertIntoNumber(text) {
    const input = ui.number;
    const focused = document.activeElement === input;
    const start = focused ? input.selectionStart : input.value.length;
    const end = focused ? input.selectionEnd : input.value.length;
    input.setRangeText(text, start, end, 'end');
    render();
  }

  function deleteFromNumber() {
    if (call) return;
    const input = ui.number;
    const focused = document.activeElement === input;
    let start = focused ? input.selectionStart : input.value.length;
    const end = focused ? input.selectionEnd : input.value.length;
    if (start === end) start = Math.max(0, start - 1);
    input.setRangeText('', start, end, 'end');
    render();
  }

  // ---------------------------------------------------------------- gateway connection

  function socketUrl() {
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/ws';
  }

  function connect() {
    clearTimeout(gateway.retryTimer);
    clearInterval(gateway.countdownTimer);
    gateway.retryTimer = null;
    setConnection('connecting');
    let socket;
    try {
      socket = new WebSocket(socketUrl());
    } catch (err) {
      console.warn('sipgw: cannot open the gateway socket', err);
      scheduleReconnect();
      return;
    }
    gateway.socket = socket;
    socket.onopen = () => {
      const hello = { type: 'hello' };
      const params = new URLSearchParams(location.search);
      if (params.get('token')) hello.token = params.get('token');
      if (params.get('user')) hello.user = params.get('user');
      send(hello);
      gateway.welcomeTimer = setTimeout(() => socket.close(4000, 'no welcome'), WELCOME_TIMEOUT_MS);
    };
    socket.onmessage = (event) => {
      if (socket !== gateway.socket) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        console.warn('sipgw: ignoring a message that is not JSON');
        return;
      }
      if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
      logMessage('in', msg);
      const handler = handlers[msg.type];
      if (handler) handler(msg);
      else console.info('sipgw: ignoring message of type %s', msg.type);
    };
    socket.onclose = () => {
      if (socket !== gateway.socket) return;
      onSocketLost();
    };
    // onerror is always followed by onclose, which does the work.
    socket.onerror = () => {};
  }

  function onSocketLost() {
    clearTimeout(gateway.welcomeTimer);
    const wasWelcomed = gateway.welcomed;
    gateway.socket = null;
    gateway.welcomed = false;
    gateway.session = null;
    if (call) {
      showNotice('The connection to the gateway was lost, so the call was ended. '
        + 'Reconnecting\u2026', 'connection');
      endCall(call, { reason: 'Connection lost' });
    } else {
      if (wasWelcomed) showNotice('The connection to the gateway was lost. Reconnecting\u2026', 'connection');
      if (phoneState !== 'ended') setState('connecting');
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** gateway.attempts);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4)); // jitter: no thundering herd
    gateway.attempts += 1;
    gateway.retryAt = Date.now() + delay;
    setConnection('disconnected');
    gateway.countdownTimer = setInterval(() => setConnection('disconnected'), 1000);
    gateway.retryTimer = setTimeout(connect, delay);
  }

  function send(msg) {
    const socket = gateway.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(msg));
    logMessage('out', msg);
    return true;
  }

  function logMessage(direction, msg) {
    messages.push({ dir: direction, type: msg.type, id: msg.id, at: Date.now() });
    if (messages.length > MESSAGE_LOG_MAX) messages.splice(0, messages.length - MESSAGE_LOG_MAX);
  }

  // ---------------------------------------------------------------- server messages

  // Messages about a call are only acted on for the call in progress: a late message for a
  // call that ended locally (hung up, socket lost) is dropped.
  const forCall = (fn) => (msg) => {
    if (call && msg.id === call.id && !call.ended) fn(call, msg);
    else console.info('sipgw: ignoring %s for call %s', msg.type, msg.id);
  };

  const handlers = {
    welcome(msg) {
      clearTimeout(gateway.welcomeTimer);
      gateway.welcomed = true;
      gateway.attempts = 0;
      gateway.session = typeof msg.session === 'string' ? msg.session : null;
      // Exactly what the gateway says: an empty list must not fall back to a public STUN server.
      gateway.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
      gateway.demo = msg.demo && typeof msg.demo === 'object' ? msg.demo : null;
      setConnection('connected');
      if (noticeKind === 'connection') hideNotice();
      if (phoneState === 'connecting') setState('ready');
      else render();
    },

    ringing: forCall((c) => {
      if (c.state === 'calling') c.state = 'ringing';
      if (!c.earlyMedia && c.state === 'ringing') startRingback();
      setState(c.state);
    }),

    progress: forCall((c, msg) => {
      c.earlyMedia = true;
      stopRingback(); // the network's own ringback or announcement plays instead
      if (c.state === 'calling') c.state = 'ringing';
      setState(c.state);
      applyRemoteDescription(c, 'answer', msg.sdp);
    }),

    answer: forCall((c, msg) => {
      stopRingback();
      applyRemoteDescription(c, 'answer', msg.sdp);
      if (c.state !== 'connected') {
        c.state = 'connected';
        c.connectedAt = performance.now();
        startClock();
      }
      setState('connected');
    }),

    hangup: forCall((c, msg) => {
      const code = Number.isInteger(msg.code) ? msg.code : null;
      const reason = typeof msg.reason === 'string' && msg.reason
        ? msg.reason
        : (code ? 'SIP ' + code : 'Remote hung up');
      endCall(c, { reason, code, failed: code !== null && code >= 300 });
    }),

    candidate: forCall((c, msg) => {
      if (!msg.candidate || typeof msg.candidate !== 'object') return;
      c.remoteReady
        .then(() => (c.ended ? undefined : c.pc.addIceCandidate(msg.candidate)))
        .catch((err) => console.info('sipgw: call %s: candidate not added: %s', c.id, err.message));
    }),

    error(msg) {
      const code = typeof msg.code === 'string' ? msg.code : 'error';
      const text = typeof msg.message === 'string' && msg.message
        ? msg.message
        : 'The gateway refused a request (' + code + ').';
      const current = call && msg.id === call.id;
      if (current && !NON_FATAL_ERRORS.has(code)) {
        // The state line carries the message; a notice would only repeat it.
        endCall(call, { reason: text, error: code });
      } else if (msg.id && !current) {
        // About a call that already ended here (a hangup crossing a late request).
        console.info('sipgw: error %s for ended call %s: %s', code, msg.id, text);
      } else {
        showNotice(text, 'server');
      }
    },

    // Issue 3 adds `incoming` here: build a Call with direction 'inbound', ring locally,
    // and answer with `accept {id, sdp}` / `reject {id, code}`.
  };

  // ---------------------------------------------------------------- audio: ringback, DTMF, meter

  function unlockAudio() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    if (!audioCtx) audioCtx = new Ctx();
    if (audioCtx.state === 'suspended') audioCtx.resume().catch(() => {});
    return audioCtx;
  }

  function startRingback() {
    const ctx = unlockAudio();
    if (!ctx || ringback) return;
    const gain = ctx.createGain();
    gain.gain.value = 0;
    gain.connect(ctx.destination);
    const oscillators = RINGBACK_HZ.map((hz) => {
      const osc = ctx.createOscillator();
      osc.frequency.value = hz;
      osc.connect(gain);
      osc.start();
      return osc;
    });
    const level = 0.12 / RINGBACK_HZ.length;
    const burst = () => {
      const t = ctx.currentTime + 0.02;
      gain.gain.setValueAtTime(0, t);
      gain.gain.linearRampToValueAtTime(level, t + 0.02); // ramps avoid clicks
      gain.gain.setValueAtTime(level, t + RINGBACK_ON_S - 0.02);
      gain.gain.linearRampToValueAtTime(0, t + RINGBACK_ON_S);
    };
    burst();
    ringback = { ctx, gain, oscillators, timer: setInterval(burst, RINGBACK_PERIOD_MS) };
  }

  function stopRingback() {
    if (!ringback) return;
    const { ctx, gain, oscillators, timer } = ringback;
    ringback = null;
    clearInterval(timer);
    const now = ctx.currentTime;
    gain.gain.cancelScheduledValues(now);
    gain.gain.setValueAtTime(gain.gain.value, now);
    gain.gain.linearRampToValueAtTime(0, now + 0.03);
    for (const osc of oscillators) osc.stop(now + 0.05);
    oscillators[0].onended = () => gain.disconnect();
  }

  function playDtmfFeedback(digit) {
    const ctx = unlockAudio();
    const pair = DTMF_HZ[digit];
    if (!ctx || !pair) return;
    const gain = ctx.createGain();
    const t = ctx.currentTime;
    gain.gain.setValueAtTime(0, t);
    gain.gain.linearRampToValueAtTime(0.05, t + 0.01);
    gain.gain.setValueAtTime(0.05, t + 0.11);
    gain.gain.linearRampToValueAtTime(0, t + 0.12);
    gain.connect(ctx.destination);
    for (const hz of pair) {
      const osc = ctx.createOscillator();
      osc.frequency.value = hz;
      osc.connect(gain);
      osc.start(t);
      osc.stop(t + 0.13);
    }
    setTimeout(() => gain.disconnect(), 300);
  }

  function startMeter(stream) {
    stopMeter();
    const ctx = unlockAudio();
    if (!ctx) return;
    const source = ctx.createMediaStreamSource(stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const m = { source, analyser, raf: 0, shown: 0 };
    const tick = () => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (let i = 0; i < samples.length; i += 1) sum += samples[i] * samples[i];
      const rms = Math.sqrt(sum / samples.length);
      // -60 dBFS .. 0 dBFS onto 0..1; fast attack, slow release, like a hardware meter.
      const db = rms > 0 ? 20 * Math.log10(rms) : -100;
      const target = Math.min(1, Math.max(0, (db + 60) / 60));
      m.shown = target > m.shown ? target : m.shown * 0.9 + target * 0.1;
      showLevel(m.shown);
      m.raf = requestAnimationFrame(tick);
    };
    m.raf = requestAnimationFrame(tick);
    meter = m;
  }

  function stopMeter() {
    if (meter) {
      cancelAnimationFrame(meter.raf);
      meter.source.disconnect();
      meter = null;
    }
    showLevel(0);
  }

  function showLevel(level) {
    const percent = Math.round(level * 100);
    ui.levelBar.style.transform = 'scaleX(' + level.toFixed(3) + ')';
    if (ui.level.dataset.level !== String(percent)) {
      ui.level.dataset.level = String(percent);
      ui.level.setAttribute('aria-valuenow', String(percent));
    }
  }

  // ---------------------------------------------------------------- rendering

  function setState(state) {
    if (phoneState !== state) {
      phoneState = state;
      history.push(state);
    }
    render();
  }

  function stateText() {
    switch (phoneState) {
      case 'connecting': return 'Connecting to gateway';
      case 'ready': return 'Ready';
      case 'calling': return 'Calling\u2026';
      case 'ringing': return 'Ringing\u2026';
      case 'connected':
        return 'Connected ' + formatDuration(call && call.connectedAt ? performance.now() - call.connectedAt : 0);
      default: return phoneState;
    }
  }

  function render() {
    const inCall = call !== null;
    ui.state.dataset.state = phoneState;
    if (phoneState === 'ended') {
      // The reason element itself goes into the line, so #state reads
      // "Call ended: Busy Here (486)" and #reason "Busy Here".
      if (ui.reason.parentNode !== ui.state) {
        const code = ui.reason.dataset.code;
        ui.state.replaceChildren('Call ended: ', ui.reason, code ? ' (' + code + ')' : '');
      }
    } else {
      if (ui.reason.parentNode !== ui.reasonHolder) ui.reasonHolder.appendChild(ui.reason);
      const text = stateText();
      if (ui.state.textContent !== text) ui.state.textContent = text;
    }

    ui.call.disabled = inCall || !gateway.welcomed;
    ui.hangup.disabled = !inCall;
    ui.number.readOnly = inCall;
    ui.backspace.hidden = inCall || ui.number.value.length === 0;

    const muted = inCall && call.muted;
    ui.mute.disabled = !inCall || !call.localStream;
    ui.mute.setAttribute('aria-pressed', muted ? 'true' : 'false');
    ui.muteLabel.textContent = muted ? 'Muted' : 'Mute';

    ui.dtmfSent.hidden = !inCall || !call.dtmf;
    ui.lastCall.hidden = phoneState !== 'ended' || !ui.lastCall.textContent;
    renderDemoHint();
  }

  function renderDemoHint() {
    const demo = gateway.demo;
    const show = phoneState === 'ready' && demo !== null;
    ui.demoHint.hidden = !show;
    if (!show) return;
    const key = JSON.stringify(demo);
    if (ui.demoHint.dataset.key === key) return;
    ui.demoHint.dataset.key = key;
    const parts = ['Try '];
    const entries = [[demo.echo, 'echo'], [demo.tone, 'tone']].filter(([ext]) => typeof ext === 'string' && ext);
    entries.forEach(([ext, label], i) => {
      if (i) parts.push(' or ');
      const link = document.createElement('button');
      link.type = 'button';
      link.className = 'link';
      link.textContent = ext;
      link.addEventListener('click', () => { ui.number.value = ext; render(); });
      parts.push(link, ' (' + label + ')');
    });
    ui.demoHint.replaceChildren(...(entries.length ? parts : []));
  }

  function setConnection(kind) {
    ui.connection.dataset.conn = kind;
    let text;
    if (kind === 'connected') text = 'Gateway connected';
    else if (kind === 'connecting') text = gateway.attempts ? 'Reconnecting\u2026' : 'Connecting\u2026';
    else {
      const seconds = Math.max(1, Math.ceil((gateway.retryAt - Date.now()) / 1000));
      text = 'Disconnected \u00b7 retry in ' + seconds + '\u202fs';
    }
    ui.connectionText.textContent = text;
    if (kind !== 'disconnected') clearInterval(gateway.countdownTimer);
  }

  function startClock() {
    stopClock();
    // A quarter-second tick keeps the display within 250 ms of the real second boundary.
    clockTimer = setInterval(render, 250);
  }

  function stopClock() {
    clearInterval(clockTimer);
    clockTimer = null;
  }

  function formatDuration(ms) {
    const total = Math.floor(ms / 1000);
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    const two = (n) => String(n).padStart(2, '0');
    return (h ? h + ':' + two(m) : two(m)) + ':' + two(s);
  }

  function showNotice(text, kind) {
    noticeKind = kind;
    ui.noticeText.textContent = text;
    ui.notice.hidden = false;
  }

  function hideNotice() {
    noticeKind = null;
    ui.notice.hidden = true;
  }

  function flash(element) {
    element.classList.remove('shake');
    void element.offsetWidth; // restart the animation
    element.classList.add('shake');
  }

  function flashKey(digit) {
    const key = document.querySelector('button.key[data-digit="' + CSS.escape(digit) + '"]');
    if (!key) return;
    key.classList.add('pressed');
    setTimeout(() => key.classList.remove('pressed'), 120);
  }

  // ---------------------------------------------------------------- input

  for (const key of ui.keys) {
    key.addEventListener('click', () => pressDigit(key.dataset.digit));
  }
  ui.call.addEventListener('click', () => { startCall(); });
  ui.hangup.addEventListener('click', hangup);
  ui.mute.addEventListener('click', toggleMute);
  ui.backspace.addEventListener('click', deleteFromNumber);
  ui.noticeClose.addEventListener('click', hideNotice);
  ui.number.addEventListener('input', render);

  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const key = event.key;
    if (key === 'Enter') {
      if (!call) {
        event.preventDefault();
        startCall();
      }
      return;
    }
    if (key === 'Escape') {
      if (call) {
        event.preventDefault();
        hangup();
      }
      return;
    }
    if (/^[0-9*#]$/.test(key)) {
      if (call) {
        event.preventDefault();
        pressDigit(key);
      } else if (event.target !== ui.number) {
        event.preventDefault();
        pressDigit(key);
      }
      return; // typed into the focused field natively
    }
    if (key === '+' && !call && event.target !== ui.number) {
      event.preventDefault();
      insertIntoNumber('+');
    } else if (key === 'Backspace' && !call && event.target !== ui.number) {
      event.preventDefault();
      deleteFromNumber();
    }
  });

  // Leaving the page must not leave a call up on the SIP side.
  window.addEventListener('pagehide', () => {
    if (call && call.sent) send({ type: 'hangup', id: call.id });
  });

  const initial = new URLSearchParams(location.search).get('to');
  if (initial) ui.number.value = initial;
  history.push(phoneState);
  render();
  connect();
})();
