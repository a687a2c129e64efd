// sipgw softphone: the browser side of the protocol in docs/protocol.md.
// Plain script, no build step. One gateway connection, at most one call at a time.
'use strict';

(() => {
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const WELCOME_TIMEOUT_MS = 10000;
  // Non-trickle: the SIP side needs every candidate in the SDP, but a stuck gatherer
  // (an unreachable STUN/TURN server) must not hold the call up for long.
  const ICE_GATHER_TIMEOUT_MS = 2000;
  const RINGBACK_HZ = [425];
  const RINGBACK_ON_S = 1;
  const RINGBACK_PERIOD_MS = 5000;
  // Incoming ring: a soft double burst ("ring-ring") of 440+480 Hz every 3 s.
  const RING_HZ = [440, 480];
  const RING_BURSTS_S = [[0, 0.4], [0.6, 1.0]];
  const RING_PERIOD_MS = 3000;
  const DTMF_HZ = {
    1: [697, 1209], 2: [697, 1336], 3: [697, 1477],
    4: [770, 1209], 5: [770, 1336], 6: [770, 1477],
    7: [852, 1209], 8: [852, 1336], 9: [852, 1477],
    '*': [941, 1209], 0: [941, 1336], '#': [941, 1477],
  };
  const DTMF_SHOWN = 16; // digits kept on screen, per direction
  const MESSAGE_LOG_MAX = 200;
  // Before the answer, an error about the call refuses the call itself, except these.
  // (not-allowed, the dialling policy's refusal, ends the call and shows why.)
  const NON_FATAL_ERRORS = new Set(['bad-state']);
  // Once connected, an error refuses one request (hold, transfer, DTMF) unless the
  // gateway no longer knows the call.
  const FATAL_CONNECTED_ERRORS = new Set(['no-such-call', 'no-session', 'bad-sdp']);
  const TRANSFER_PENDING = new Set(['requested', 'trying', 'accepted', 'ringing']);
  const STORE_USER = 'sipgw.user';
  const STORE_TOKEN = 'sipgw.token';

  const $ = (id) => document.getElementById(id);
  const ui = {
    connection: $('connection'),
    connectionText: $('connection-text'),
    loginForm: $('login-form'),
    loginUser: $('login-user'),
    loginPassword: $('login-password'),
    login: $('login'),
    loginMessage: $('login-message'),
    signedIn: $('signed-in'),
    signedInUser: $('signed-in-user'),
    signedInExt: $('signed-in-ext'),
    logout: $('logout'),
    registrations: $('registrations'),
    number: $('number'),
    backspace: $('backspace'),
    state: $('state'),
    holdState: $('hold-state'),
    dtmfSentLine: $('dtmf-sent-line'),
    dtmfSent: $('dtmf-sent'),
    dtmfReceivedLine: $('dtmf-received-line'),
    dtmfReceived: $('dtmf-received'),
    lastCall: $('last-call'),
    demoHint: $('demo-hint'),
    reason: $('reason'),
    reasonHolder: $('reason-holder'),
    transferState: $('transfer-state'),
    notice: $('notice'),
    noticeText: $('notice-text'),
    noticeClose: $('notice-close'),
    mute: $('mute'),
    muteLabel: $('mute-label'),
    hold: $('hold'),
    holdLabel: $('hold-label'),
    level: $('level'),
    levelBar: document.querySelector('#level .level-bar'),
    transferForm: $('transfer-form'),
    transferNumber: $('transfer-number'),
    transfer: $('transfer'),
    call: $('call'),
    hangup: $('hangup'),
    incoming: $('incoming'),
    incomingName: $('incoming-name'),
    incomingNumber: $('incoming-number'),
    incomingInitials: $('incoming-initials'),
    answer: $('answer'),
    decline: $('decline'),
    audio: $('remote-audio'),
    keys: document.querySelectorAll('button.key'),
  };

  // ---------------------------------------------------------------- shared state

  const gateway = {
    socket: null,
    session: null,
    iceServers: [],
    iceTransportPolicy: 'all', // 'relay' when the gateway wants every call through TURN
    demo: null, // set when the gateway runs its built-in demo endpoint (any user name signs in)
    welcomed: false,
    user: null, // the session's user name as the gateway says it (a demo guest too), or null
    signedIn: false, // welcomed for a user name the page sent (not an anonymous demo guest)
    extension: null,
    helloUser: null, // the user name sent in the last hello
    authError: null, // the gateway's words when it refused the last hello's credentials
    needsSignIn: false, // the gateway refused the last hello: the socket waits for another
    attempts: 0,
    retryAt: 0,
    retryTimer: null,
    countdownTimer: null,
    welcomeTimer: null,
  };

  // Where the credentials for hello come from: the login form (remembered), else the URL.
  const credentials = initialCredentials();
  const registrations = new Map(); // account -> the last registration message about it

  let phoneState = 'connecting';
  let call = null; // the call in progress (ringing in included), or null
  let shownCall = null; // the call whose objects window.softphone exposes: current or last
  let noticeKind = null;
  let audioCtx = null;
  let ringback = null;
  let ringer = null;
  let meter = null;
  let clockTimer = null;
  const pageTitle = document.title;

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
    get user() { return gateway.user; },
    get ringback() { return ringback !== null; },
    get ringing() { return ringer !== null; },
    get muted() { return call ? call.muted : false; },
    get held() { return call ? { local: call.heldLocal, remote: call.heldRemote } : null; },
    // The pending `incoming` message while it waits for Answer or Decline, else null.
    get incoming() { return call && call.isRingingIn() ? call.incoming : null; },
    get registrations() { return Array.from(registrations.values()); },
    history,
    messages,
  };
  window.softphone = softphone;

  // ---------------------------------------------------------------- credentials

  function initialCredentials() {
    const params = new URLSearchParams(location.search);
    if (params.get('user') || params.get('token')) {
      return { user: params.get('user') || '', token: params.get('token') || '', remember: false };
    }
    return { user: storageGet(STORE_USER) || '', token: storageGet(STORE_TOKEN) || '', remember: true };
  }

  // localStorage throws in some private modes and sandboxed frames: then nothing is remembered.
  function storageGet(key) {
    try { return window.localStorage.getItem(key); } catch (err) { return null; }
  }

  function storageSet(key, value) {
    try {
      if (value) window.localStorage.setItem(key, value);
      else window.localStorage.removeItem(key);
    } catch (err) { /* not remembered */ }
  }

  function helloMessage() {
    const hello = { type: 'hello' };
    if (credentials.user) hello.user = credentials.user;
    if (credentials.token) hello.token = credentials.token;
    gateway.helloUser = credentials.user || null;
    gateway.needsSignIn = false;
    return hello;
  }

  function submitLogin(event) {
    event.preventDefault();
    if (call) return; // signing in again would end the call
    const user = ui.loginUser.value.trim();
    if (!user) {
      ui.loginUser.focus();
      flash(ui.loginUser);
      return;
    }
    credentials.user = user;
    credentials.token = ui.loginPassword.value;
    credentials.remember = true;
    gateway.authError = null;
    unlockAudio(); // a click: later ring and ringback may play
    signIn();
  }

  function signOut() {
    if (call) return;
    credentials.user = '';
    credentials.token = '';
    storageSet(STORE_USER, '');
    storageSet(STORE_TOKEN, '');
    ui.loginPassword.value = '';
    gateway.authError = null;
    signIn();
  }

  // An unauthenticated socket may take another hello; a session that already has a user is
  // replaced by a fresh socket, so nothing of the old identity lingers on the gateway.
  function signIn() {
    const socket = gateway.socket;
    if (socket && socket.readyState === WebSocket.OPEN && !gateway.welcomed) {
      send(helloMessage());
      armWelcomeTimer(socket);
      render();
      return;
    }
    if (socket) {
      gateway.socket = null; // its close event must not count as a lost connection
      socket.close(1000, 'signing in again');
    }
    clearTimeout(gateway.welcomeTimer);
    gateway.welcomed = false;
    gateway.session = null;
    gateway.attempts = 0;
    if (phoneState !== 'ended') setState('connecting');
    connect();
  }

  // ---------------------------------------------------------------- the call

  class Call {
    constructor(id, direction, number) {
      this.id = id;
      this.direction = direction; // 'outbound' or 'inbound'
      this.number = number;
      this.name = ''; // the caller's display name (inbound)
      this.state = direction === 'inbound' ? 'incoming' : 'calling';
      this.incoming = null; // the `incoming` message (inbound)
      this.accepted = false; // inbound: Answer clicked
      this.pc = null;
      this.localStream = null;
      this.remoteStream = null;
      this.sent = false; // the gateway knows this id
      this.sdpSent = false; // our complete SDP went out: later candidates are trickled
      this.remoteSdp = null;
      this.earlyMedia = false;
      this.muted = false;
      this.heldLocal = false;
      this.heldRemote = false;
      this.holdPending = false;
      this.lastRequest = null; // 'hold', 'unhold', 'transfer' or 'dtmf': what an error refers to
      this.transfer = null; // {to, state, code, reason}
      this.connectedAt = 0;
      this.ended = false;
      this.dtmf = '';
      this.dtmfReceived = '';
      // Candidates can arrive before the answer; addIceCandidate needs a remote description.
      this.remoteReady = new Promise((resolve) => { this.markRemoteReady = resolve; });
    }

    get active() { return !this.ended; }

    isRingingIn() {
      return this.direction === 'inbound' && this.state === 'incoming' && !this.accepted && !this.ended;
    }

    // The gateway relays DTMF, hold and transfer only in an established dialog.
    isConnected() {
      return this.sent && !this.ended && this.state === 'connected';
    }

    canSendDtmf() { return this.isConnected(); }

    transferPending() {
      return this.transfer !== null && TRANSFER_PENDING.has(this.transfer.state);
    }
  }

  function newId() {
    if (window.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function beginCall(c) {
    call = c;
    shownCall = c;
    ui.dtmfSent.textContent = '';
    ui.dtmfReceived.textContent = '';
    ui.transferNumber.value = '';
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
    beginCall(c);
    setState('calling');
    unlockAudio(); // inside the click/keypress, so autoplay rules allow it

    const pc = await preparePeer(c);
    if (!pc) return;
    for (const track of c.localStream.getTracks()) pc.addTrack(track, c.localStream);
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
    c.sdpSent = true;
  }

  // Microphone and peer connection for a call, in either direction; null if the call ended
  // meanwhile or the microphone could not be opened (the call is then ended here).
  async function preparePeer(c, onMicrophoneProblem) {
    let stream;
    try {
      stream = await getMicrophone();
    } catch (err) {
      const problem = microphoneProblem(err);
      showNotice(problem.message, 'microphone');
      if (onMicrophoneProblem) onMicrophoneProblem();
      endCall(c, { reason: problem.reason });
      return null;
    }
    if (c.ended) {
      stopStream(stream);
      return null;
    }
    c.localStream = stream;
    startMeter(stream);

    const pc = new RTCPeerConnection({
      iceServers: gateway.iceServers,
      iceTransportPolicy: gateway.iceTransportPolicy,
    });
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
    // Candidates found after the complete SDP went out (a slow STUN/TURN server) still help,
    // e.g. a browser-to-browser call that the gateway relays candidates for.
    pc.onicecandidate = (event) => {
      if (!event.candidate || !c.sdpSent || c.ended) return;
      send({ type: 'candidate', id: c.id, candidate: event.candidate.toJSON() });
    };
    return pc;
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
  // early media) would need a renegotiation the gateway does not do, so it is ignored.
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

  // ---------------------------------------------------------------- inbound calls

  function onIncoming(msg) {
    if (typeof msg.id !== 'string' || !msg.id) return;
    const from = typeof msg.from === 'string' ? msg.from : '';
    if (call) {
      // One call at a time: this session is busy; other sessions of the user may still answer.
      if (call.id !== msg.id) send({ type: 'reject', id: msg.id, code: 486 });
      return;
    }
    if (typeof msg.sdp !== 'string' || !msg.sdp) {
      console.warn('sipgw: incoming call %s without an offer', msg.id);
      send({ type: 'reject', id: msg.id });
      return;
    }
    hideNotice();
    const c = new Call(msg.id, 'inbound', from);
    c.name = typeof msg.fromName === 'string' ? msg.fromName.trim() : '';
    c.incoming = msg;
    c.sent = true;
    beginCall(c);
    showIncoming(c);
    startRing();
    setState('incoming');
  }

  async function answerIncoming() {
    const c = call;
    if (!c || !c.isRingingIn()) return;
    c.accepted = true;
    stopRing();
    hideIncoming();
    // The number field shows who the call is with (and allows calling back afterwards).
    ui.number.value = c.number;
    unlockAudio();
    render();

    // A refused microphone refuses the call: the caller hears busy, not silence.
    const pc = await preparePeer(c, () => send({ type: 'reject', id: c.id }));
    if (!pc) return;
    try {
      c.remoteSdp = c.incoming.sdp;
      await pc.setRemoteDescription({ type: 'offer', sdp: c.incoming.sdp });
      c.markRemoteReady();
      // After the offer, so the track takes the offered audio section's transceiver.
      for (const track of c.localStream.getTracks()) pc.addTrack(track, c.localStream);
      await pc.setLocalDescription(await pc.createAnswer());
      await iceGatheringDone(pc, ICE_GATHER_TIMEOUT_MS);
    } catch (err) {
      if (!c.ended) {
        console.warn('sipgw: call %s: cannot answer the offer', c.id, err);
        send({ type: 'reject', id: c.id, code: 488 });
        showNotice('The browser could not answer the call (' + err.message + ').', 'call');
        endCall(c, { reason: 'Could not answer' });
      }
      return;
    }
    if (c.ended) return;
    if (!send({ type: 'accept', id: c.id, sdp: pc.localDescription.sdp })) {
      endCall(c, { reason: 'Not connected to the gateway' });
      return;
    }
    c.sdpSent = true;
  }

  function declineIncoming() {
    const c = call;
    if (!c || !c.isRingingIn()) return;
    // 603 Decline: the user said no, rather than "busy here".
    send({ type: 'reject', id: c.id, code: 603 });
    endCall(c, { reason: 'Declined', failed: false });
  }

  function showIncoming(c) {
    const name = c.name || c.number || 'Unknown caller';
    ui.incoming.dataset.from = c.number;
    ui.incomingName.textContent = name;
    ui.incomingNumber.textContent = c.name && c.number ? c.number : '';
    ui.incomingNumber.hidden = !ui.incomingNumber.textContent;
    ui.incomingInitials.textContent = initials(c.name) || '#';
    ui.incoming.hidden = false;
    document.title = '\u260e ' + name + ' calling';
  }

  function hideIncoming() {
    ui.incoming.hidden = true;
    document.title = pageTitle;
  }

  function initials(name) {
    const words = name.split(/\s+/).filter((w) => /\p{L}/u.test(w));
    return words.slice(0, 2).map((w) => Array.from(w)[0].toUpperCase()).join('');
  }

  // ---------------------------------------------------------------- in-call requests

  function hangup() {
    const c = call;
    if (!c) return;
    if (c.isRingingIn()) {
      declineIncoming();
      return;
    }
    if (c.sent) send({ type: 'hangup', id: c.id });
    endCall(c, { reason: c.state === 'connected' ? 'Hung up' : 'Cancelled', failed: false });
  }

  function toggleHold() {
    const c = call;
    if (!c || !c.isConnected() || c.holdPending) return;
    const type = c.heldLocal ? 'unhold' : 'hold';
    if (!send({ type, id: c.id })) return;
    c.holdPending = true;
    c.lastRequest = type;
    render();
  }

  function submitTransfer(event) {
    event.preventDefault();
    const c = call;
    if (!c || !c.isConnected() || c.transferPending()) return;
    const to = ui.transferNumber.value.trim();
    if (!to) {
      ui.transferNumber.focus();
      flash(ui.transferNumber);
      return;
    }
    if (!send({ type: 'transfer', id: c.id, to })) return;
    c.lastRequest = 'transfer';
    c.transfer = { to, state: 'requested', code: null, reason: '' };
    render();
  }

  // The gateway ends the call after a done transfer, so the ended screen keeps saying where
  // the call went.
  function transferText(t) {
    const detail = [t.reason, t.code ? '(' + t.code + ')' : ''].filter(Boolean).join(' ');
    switch (t.state) {
      case 'requested': return 'Transferring to ' + t.to + '\u2026';
      case 'trying': return 'Transfer to ' + t.to + ': trying\u2026';
      case 'accepted': return 'Transfer to ' + t.to + ': accepted\u2026';
      case 'ringing': return 'Transfer to ' + t.to + ': ringing\u2026';
      case 'done': return 'Transferred to ' + t.to;
      case 'failed': return 'Transfer to ' + t.to + ' failed' + (detail ? ': ' + detail : '');
      default: return 'Transfer to ' + t.to + ': ' + t.state;
    }
  }

  // The one way out of a call: every path (either side hangs up, error, socket loss,
  // microphone refused, declined) releases the microphone, the peer connection and the timers
  // here. `failed` colours the outcome: a busy callee or a lost link, not a normal goodbye.
  function endCall(c, { reason, code = null, error = null, failed = true }) {
    if (c.ended) return;
    c.ended = true;
    const duration = c.connectedAt ? performance.now() - c.connectedAt : 0;
    stopRingback();
    stopRing();
    hideIncoming();
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
    const who = c.direction === 'inbound'
      ? 'Call from ' + (c.name ? c.name + ' (' + c.number + ')' : c.number)
      : 'Call to ' + c.number;
    ui.lastCall.textContent = who + (duration ? ' \u00b7 ' + formatDuration(duration) : '');
    c.wasConnected = c.connectedAt > 0;
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
      call.lastRequest = 'dtmf';
      call.dtmf += digit;
      ui.dtmfSent.textContent = call.dtmf.slice(-DTMF_SHOWN);
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
      if (socket !== gateway.socket) return;
      send(helloMessage());
      armWelcomeTimer(socket);
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

  function armWelcomeTimer(socket) {
    clearTimeout(gateway.welcomeTimer);
    gateway.welcomeTimer = setTimeout(() => socket.close(4000, 'no welcome'), WELCOME_TIMEOUT_MS);
  }

  function onSocketLost() {
    clearTimeout(gateway.welcomeTimer);
    const wasWelcomed = gateway.welcomed;
    gateway.socket = null;
    gateway.welcomed = false;
    gateway.session = null;
    gateway.needsSignIn = false;
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
      gateway.authError = null;
      gateway.session = typeof msg.session === 'string' ? msg.session : null;
      // Exactly what the gateway says: an empty list must not fall back to a public STUN server.
      gateway.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
      gateway.iceTransportPolicy = msg.iceTransportPolicy === 'relay' ? 'relay' : 'all';
      gateway.demo = msg.demo && typeof msg.demo === 'object' ? msg.demo : null;
      gateway.user = typeof msg.user === 'string' && msg.user ? msg.user : gateway.helloUser;
      gateway.extension = typeof msg.extension === 'string' && msg.extension ? msg.extension : null;
      // A demo gateway names an anonymous hello (e.g. "guest-3f2a1c"): the sign-in form stays.
      gateway.signedIn = gateway.helloUser !== null;
      if (gateway.signedIn && credentials.remember) {
        storageSet(STORE_USER, credentials.user);
        storageSet(STORE_TOKEN, credentials.token);
      }
      registrations.clear();
      if (Array.isArray(msg.registrations)) {
        for (const r of msg.registrations) updateRegistration(r);
      }
      renderRegistrations();
      setConnection('connected');
      if (noticeKind === 'connection') hideNotice();
      if (phoneState === 'connecting') setState('ready');
      else render();
    },

    registration(msg) {
      updateRegistration(msg);
      renderRegistrations();
    },

    incoming: onIncoming,

    ringing: forCall((c) => {
      if (c.direction !== 'outbound') return;
      if (c.state === 'calling') c.state = 'ringing';
      if (!c.earlyMedia && c.state === 'ringing') startRingback();
      setState(c.state);
    }),

    progress: forCall((c, msg) => {
      if (c.direction !== 'outbound') return;
      c.earlyMedia = true;
      stopRingback(); // the network's own ringback or announcement plays instead
      if (c.state === 'calling') c.state = 'ringing';
      setState(c.state);
      applyRemoteDescription(c, 'answer', msg.sdp);
    }),

    answer: forCall((c, msg) => {
      // Inbound: the gateway confirms our accept; the page's answer is already applied.
      if (c.direction === 'inbound' && !c.accepted) return;
      stopRingback();
      if (c.direction === 'outbound') applyRemoteDescription(c, 'answer', msg.sdp);
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
      endCall(c, { reason, code, failed: code !== null && code >= 300 && code !== 487 });
    }),

    held: forCall((c, msg) => {
      if (typeof msg.held !== 'boolean') return;
      if (msg.by === 'remote') {
        c.heldRemote = msg.held;
      } else {
        c.heldLocal = msg.held;
        c.holdPending = false;
      }
      render();
    }),

    dtmf: forCall((c, msg) => {
      if (typeof msg.digit !== 'string' || !/^[0-9*#A-D]$/i.test(msg.digit)) return;
      c.dtmfReceived += msg.digit.toUpperCase();
      ui.dtmfReceived.textContent = c.dtmfReceived.slice(-DTMF_SHOWN);
      flashKey(msg.digit);
      render();
    }),

    transfer: forCall((c, msg) => {
      if (typeof msg.state !== 'string' || !msg.state) return;
      const t = c.transfer || { to: '', state: '', code: null, reason: '' };
      t.state = msg.state;
      t.code = Number.isInteger(msg.code) ? msg.code : null;
      t.reason = typeof msg.reason === 'string' ? msg.reason : '';
      c.transfer = t;
      render();
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
      if (code === 'auth-failed') {
        onAuthFailed(text);
        return;
      }
      const current = call && msg.id === call.id;
      if (current && call.isConnected() && !FATAL_CONNECTED_ERRORS.has(code)) {
        requestRefused(call, code, text);
      } else if (current && !NON_FATAL_ERRORS.has(code)) {
        // The state line carries the message; a notice would only repeat it.
        endCall(call, { reason: text, error: code });
      } else if (msg.id && !current) {
        // About a call that already ended here (a hangup crossing a late request).
        console.info('sipgw: error %s for ended call %s: %s', code, msg.id, text);
      } else {
        showNotice(text, 'server');
      }
    },
  };

  // An error about a connected call refuses the last request (hold, transfer, DTMF), not
  // the call.
  function requestRefused(c, code, text) {
    const request = c.lastRequest;
    if (request === 'hold' || request === 'unhold') c.holdPending = false;
    if (request === 'transfer' && c.transferPending()) {
      c.transfer.state = 'failed';
      c.transfer.reason = text;
      c.transfer.code = null;
    } else {
      showNotice(text, 'server');
    }
    console.info('sipgw: call %s: %s refused: %s (%s)', c.id, request, text, code);
    render();
  }

  function onAuthFailed(text) {
    clearTimeout(gateway.welcomeTimer); // the socket stays open for another hello
    gateway.needsSignIn = true;
    gateway.welcomed = false;
    gateway.session = null;
    gateway.user = null;
    gateway.signedIn = false;
    // A hello without credentials only means "sign in"; wrong ones deserve the gateway's words.
    gateway.authError = gateway.helloUser || credentials.token ? text : '';
    ui.loginPassword.value = '';
    if (phoneState !== 'ended') setState('connecting');
    else render();
    if (gateway.authError) ui.loginPassword.focus();
  }

  const REGISTRATION_STATES = new Set(['unregistered', 'registering', 'registered', 'failed', 'unregistering']);

  function updateRegistration(r) {
    if (!r || typeof r !== 'object' || typeof r.account !== 'string' || !r.account) return;
    const state = REGISTRATION_STATES.has(r.state) ? r.state : 'unregistered';
    registrations.set(r.account, {
      account: r.account,
      state,
      reason: typeof r.reason === 'string' ? r.reason : '',
      code: Number.isInteger(r.code) ? r.code : null,
      expires: Number.isFinite(r.expires) ? r.expires : null,
    });
  }

  function registrationText(r) {
    switch (r.state) {
      case 'registered': return 'Registered';
      case 'registering': return 'Registering\u2026';
      case 'unregistering': return 'Unregistering\u2026';
      case 'unregistered': return 'Not registered';
      case 'failed': {
        const detail = [r.reason, r.code ? '(' + r.code + ')' : ''].filter(Boolean).join(' ');
        return 'Failed' + (detail ? ': ' + detail : '');
      }
      default: return r.state;
    }
  }

  function renderRegistrations() {
    const items = [];
    for (const r of registrations.values()) {
      const li = document.createElement('li');
      li.dataset.account = r.account;
      li.dataset.state = r.state;
      const dot = document.createElement('span');
      dot.className = 'dot';
      dot.setAttribute('aria-hidden', 'true');
      const name = document.createElement('span');
      name.className = 'reg-account';
      name.textContent = r.account;
      name.title = r.account;
      const text = document.createElement('span');
      text.className = 'reg-state';
      text.textContent = registrationText(r);
      if (r.state === 'registered' && r.expires) text.title = 'Refreshes within ' + r.expires + ' s';
      li.append(dot, name, text);
      items.push(li);
    }
    ui.registrations.replaceChildren(...items);
    ui.registrations.hidden = items.length === 0;
  }

  // ---------------------------------------------------------------- audio: ring, ringback, DTMF, meter

  function unlockAudio() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    if (!audioCtx) audioCtx = new Ctx();
    if (audioCtx.state === 'suspended') audioCtx.resume().catch(() => {});
    return audioCtx;
  }

  // A repeating tone: `bursts` are [start, end] seconds inside each `periodMs`. Ramps avoid clicks.
  function startTone(ctx, freqs, level, bursts, periodMs) {
    const gain = ctx.createGain();
    gain.gain.value = 0;
    gain.connect(ctx.destination);
    const oscillators = freqs.map((hz) => {
      const osc = ctx.createOscillator();
      osc.frequency.value = hz;
      osc.connect(gain);
      osc.start();
      return osc;
    });
    const each = level / freqs.length;
    const cycle = () => {
      const t0 = ctx.currentTime + 0.02;
      for (const [from, to] of bursts) {
        gain.gain.setValueAtTime(0, t0 + from);
        gain.gain.linearRampToValueAtTime(each, t0 + from + 0.02);
        gain.gain.setValueAtTime(each, t0 + to - 0.02);
        gain.gain.linearRampToValueAtTime(0, t0 + to);
      }
    };
    cycle();
    return { ctx, gain, oscillators, timer: setInterval(cycle, periodMs) };
  }

  function stopTone(tone) {
    const { ctx, gain, oscillators, timer } = tone;
    clearInterval(timer);
    const now = ctx.currentTime;
    gain.gain.cancelScheduledValues(now);
    gain.gain.setValueAtTime(gain.gain.value, now);
    gain.gain.linearRampToValueAtTime(0, now + 0.03);
    for (const osc of oscillators) osc.stop(now + 0.05);
    oscillators[0].onended = () => gain.disconnect();
  }

  function startRingback() {
    const ctx = unlockAudio();
    if (!ctx || ringback) return;
    ringback = startTone(ctx, RINGBACK_HZ, 0.12, [[0, RINGBACK_ON_S]], RINGBACK_PERIOD_MS);
  }

  function stopRingback() {
    if (!ringback) return;
    stopTone(ringback);
    ringback = null;
  }

  // Without an earlier click or key press the browser may keep the context suspended; the
  // ring then starts with the user's first interaction (see the listener at the bottom).
  function startRing() {
    const ctx = unlockAudio();
    if (!ctx || ringer) return;
    ringer = startTone(ctx, RING_HZ, 0.16, RING_BURSTS_S, RING_PERIOD_MS);
  }

  function stopRing() {
    if (!ringer) return;
    stopTone(ringer);
    ringer = null;
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
      case 'connecting':
        return gateway.needsSignIn && gateway.socket ? 'Sign in to make calls' : 'Connecting to gateway';
      case 'ready': return 'Ready';
      case 'calling': return 'Calling\u2026';
      case 'ringing': return 'Ringing\u2026';
      case 'incoming':
        if (call && call.accepted) return 'Answering\u2026';
        return 'Incoming call from ' + (call ? call.name || call.number : '');
      case 'connected':
        return 'Connected ' + formatDuration(call && call.connectedAt ? performance.now() - call.connectedAt : 0);
      default: return phoneState;
    }
  }

  // "Call ended: Busy Here (486)" for a call that got somewhere; a call that rang in and was
  // never answered here just says what became of it ("Answered elsewhere (200)").
  function endedPrefix() {
    const c = shownCall;
    if (c && c.direction === 'inbound' && !c.wasConnected) return '';
    return 'Call ended: ';
  }

  function render() {
    const inCall = call !== null;
    const connected = inCall && call.isConnected();
    ui.state.dataset.state = phoneState;
    if (phoneState === 'ended') {
      // The reason element itself goes into the line, so #state reads
      // "Call ended: Busy Here (486)" and #reason "Busy Here".
      if (ui.reason.parentNode !== ui.state) {
        const code = ui.reason.dataset.code;
        const prefix = endedPrefix();
        ui.state.replaceChildren(...(prefix ? [prefix] : []), ui.reason, code ? ' (' + code + ')' : '');
      }
    } else {
      if (ui.reason.parentNode !== ui.reasonHolder) ui.reasonHolder.appendChild(ui.reason);
      const text = stateText();
      if (ui.state.textContent !== text) ui.state.textContent = text;
    }

    ui.call.disabled = inCall || !gateway.welcomed;
    ui.hangup.disabled = !inCall || call.isRingingIn();
    ui.number.readOnly = inCall;
    ui.backspace.hidden = inCall || ui.number.value.length === 0;

    const muted = inCall && call.muted;
    ui.mute.disabled = !inCall || !call.localStream;
    ui.mute.setAttribute('aria-pressed', muted ? 'true' : 'false');
    ui.muteLabel.textContent = muted ? 'Muted' : 'Mute';

    renderHold(connected);
    renderTransfer(connected);

    ui.dtmfSentLine.hidden = !inCall || !call.dtmf;
    ui.dtmfReceivedLine.hidden = !inCall || !call.dtmfReceived;
    ui.lastCall.hidden = phoneState !== 'ended' || !ui.lastCall.textContent;
    renderAccount();
    renderDemoHint();
  }

  function renderHold(connected) {
    const c = call;
    const local = connected && c.heldLocal;
    const remote = connected && c.heldRemote;
    ui.hold.disabled = !connected || c.holdPending;
    ui.hold.setAttribute('aria-pressed', local ? 'true' : 'false');
    let label = local ? 'Resume' : 'Hold';
    if (connected && c.holdPending) label = local ? 'Resuming\u2026' : 'Holding\u2026';
    ui.holdLabel.textContent = label;
    let text = '';
    if (local && remote) text = 'On hold \u00b7 held by other party';
    else if (local) text = 'On hold';
    else if (remote) text = 'Held by other party';
    ui.holdState.textContent = text;
    ui.holdState.dataset.by = local ? 'local' : (remote ? 'remote' : '');
    ui.holdState.hidden = !text;
  }

  function renderTransfer(connected) {
    ui.transferForm.hidden = !connected;
    const pending = connected && call.transferPending();
    ui.transfer.disabled = !connected || pending;
    ui.transferNumber.readOnly = pending;
    const c = shownCall;
    const t = c && (call === c || phoneState === 'ended') ? c.transfer : null;
    ui.transferState.hidden = !t;
    if (!t) return;
    // data-state is the last state the gateway reported ("" until its first word).
    const state = t.state === 'requested' ? '' : t.state;
    if (ui.transferState.dataset.state !== state) ui.transferState.dataset.state = state;
    const text = transferText(t);
    if (ui.transferState.textContent !== text) ui.transferState.textContent = text;
  }

  function renderAccount() {
    const signedIn = gateway.welcomed && gateway.signedIn;
    ui.signedIn.hidden = !signedIn;
    ui.loginForm.hidden = signedIn;
    ui.logout.disabled = call !== null;
    ui.login.disabled = call !== null;
    if (signedIn) {
      ui.signedInUser.textContent = gateway.user;
      ui.signedInExt.textContent = gateway.extension ? 'ext. ' + gateway.extension : '';
      ui.signedInExt.hidden = !gateway.extension;
      return;
    }
    if (!ui.loginUser.value && credentials.user && document.activeElement !== ui.loginUser) {
      ui.loginUser.value = credentials.user;
    }
    let message = '';
    let kind = '';
    if (gateway.authError) {
      message = gateway.authError;
      kind = 'error';
    } else if (gateway.welcomed && gateway.demo) {
      message = 'Demo gateway: any user name signs in, no password needed.';
      if (gateway.user) message = 'Calling as ' + gateway.user + '. ' + message;
    }
    ui.loginMessage.textContent = message;
    ui.loginMessage.dataset.kind = kind;
    ui.loginMessage.hidden = !message;
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
  ui.hold.addEventListener('click', toggleHold);
  ui.transferForm.addEventListener('submit', submitTransfer);
  ui.answer.addEventListener('click', () => { answerIncoming(); });
  ui.decline.addEventListener('click', declineIncoming);
  ui.loginForm.addEventListener('submit', submitLogin);
  ui.logout.addEventListener('click', signOut);
  ui.backspace.addEventListener('click', deleteFromNumber);
  ui.noticeClose.addEventListener('click', hideNotice);
  ui.number.addEventListener('input', render);

  // A browser keeps a page's AudioContext suspended until the user interacts with it: a ring
  // that started before then becomes audible with the first click or key press.
  const resumeAudio = () => {
    if (audioCtx && audioCtx.state === 'suspended') audioCtx.resume().catch(() => {});
  };
  document.addEventListener('pointerdown', resumeAudio, true);
  document.addEventListener('keydown', resumeAudio, true);

  // The sign-in and transfer forms, the account line and the notice keep their keys: digits,
  // Enter and Backspace there belong to the field or button that has the focus.
  const OWN_KEYS = '#login-form, #transfer-form, #signed-in, #notice';
  const ownsKeys = (target) => target instanceof Element && target.closest(OWN_KEYS) !== null;

  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const key = event.key;
    if (call && call.isRingingIn()) {
      // Esc declines; answering stays a deliberate click (Enter could be a stray key press).
      if (key === 'Escape') {
        event.preventDefault();
        declineIncoming();
      }
      return;
    }
    if (ownsKeys(event.target)) return;
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

  // Leaving the page must not leave a call up on the SIP side. A call still ringing in is
  // left alone: another open page of the same user may answer it.
  window.addEventListener('pagehide', () => {
    if (call && call.sent && !call.isRingingIn()) send({ type: 'hangup', id: call.id });
  });

  const initial = new URLSearchParams(location.search).get('to');
  if (initial) ui.number.value = initial;
  if (credentials.user) ui.loginUser.value = credentials.user;
  if (credentials.token) ui.loginPassword.value = credentials.token;
  history.push(phoneState);
  render();
  connect();
})();
