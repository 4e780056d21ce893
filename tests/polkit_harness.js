// Evaluates a polkit rules file against fake requests, with polkitd's semantics (its
// init.js: rules run in the order added, the first truthy answer wins, none = not handled).
// Plain ECMAScript 5, so that the same text runs in node's vm and in duktape (polkitd's
// engine). test_service_unit.py appends one call: __evaluate(rulesText, cases).

var __log = [];

var polkit = {
    Result: {
        NO: "no",
        YES: "yes",
        AUTH_SELF: "auth_self",
        AUTH_SELF_KEEP: "auth_self_keep",
        AUTH_ADMIN: "auth_admin",
        AUTH_ADMIN_KEEP: "auth_admin_keep",
        NOT_HANDLED: null
    },
    _rules: [],
    addRule: function (f) { this._rules.push(f); },
    addAdminRule: function (f) { },
    log: function (message) { __log.push(String(message)); },
    spawn: function () { throw new Error("polkit.spawn is not expected here"); },
    _runRules: function (action, subject) {
        for (var n = 0; n < this._rules.length; n++) {
            var answer = this._rules[n](action, subject);
            if (answer) {
                return answer;
            }
        }
        return null;
    }
};

function Action(id, details) {
    this.id = id;
    this._details = details;
}
Action.prototype.lookup = function (name) {
    return Object.prototype.hasOwnProperty.call(this._details, name) ?
        this._details[name] : undefined;
};

function Subject(user, groups) {
    this.user = user;
    this.groups = groups;
    this.pid = 4242;
    this.seat = "";
    this.session = "";
    this.local = false;
    this.active = false;
}
Subject.prototype.isInGroup = function (group) { return this.groups.indexOf(group) >= 0; };
Subject.prototype.isInNetGroup = function (group) { return false; };

function __evaluate(rulesText, cases) {
    (0, eval)(rulesText);  // global code, as polkitd loads a rules file
    var results = [];
    for (var n = 0; n < cases.length; n++) {
        var c = cases[n];
        __log = [];
        var answer = polkit._runRules(new Action(c.action, c.details),
                                      new Subject(c.user, c.groups || []));
        results.push({result: answer, log: __log});
    }
    return JSON.stringify({rules: polkit._rules.length, results: results});
}
