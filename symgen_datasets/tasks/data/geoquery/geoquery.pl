/*  GeoQuery's meaning representation over geobase (Zelle & Mooney, AAAI 1996; Tang & Mooney,
    EMNLP 2000): the predicates the 880 GeoQuery queries use, defined over the geobase facts
    (state/10, city/4, river/3, border/3, highlow/6, mountain/4, road/2, lake/3, country/3).

    Entities are wrapped by their kind: stateid(S), cityid(C, StateAbbreviation), riverid(R),
    placeid(P), mountainid(M), lakeid(L), countryid(usa). A query answer(A, Goal) denotes the
    sorted set of A's printed names over Goal's solutions (see denotation/2).

    The superlatives largest/2, smallest/2, highest/2 and the counting most/3, fewest/3 are
    evaluated on their own, as subqueries: prepare/2 rewrites them before execution so that they
    see fresh copies of their variables, and their winner is then unified with the rest of the
    query (as the GeoQuery evaluator does). lowest/2, longest/2, shortest/2, count/3 and sum/3
    see the bindings made before them.

    This file defines no predicate that reaches outside the database: the server (server.pl)
    refuses any goal that is not one of these (allowed_goal/1) before running it.
*/

% ---- entities ---------------------------------------------------------------------------------
state(stateid(S)) :- state(S, _, _, _, _, _, _, _, _, _).
city(cityid(C, A)) :- city(_, A, C, _).
river(riverid(R)) :- river(R, _, _).
lake(lakeid(L)) :- lake(L, _, _).
mountain(mountainid(M)) :- mountain(_, _, M, _).
place(placeid(P)) :- highlow(_, _, P, _, _, _).
place(placeid(P)) :- highlow(_, _, _, _, P, _).
country(countryid(usa)).

abbreviation(stateid(S), A) :- state(S, A, _, _, _, _, _, _, _, _).
abbreviation(A) :- abbreviation(_, A).
capital(stateid(S), cityid(C, A)) :- state(S, A, C, _, _, _, _, _, _, _).
capital(C) :- capital(_, C).

% ---- where things are -------------------------------------------------------------------------
loc(X, countryid(usa)) :- city(X) ; state(X) ; river(X) ; place(X) ; lake(X) ; mountain(X).
loc(cityid(C, A), stateid(S)) :- city(S, A, C, _).
loc(cityid(C, A), stateid(S)) :- state(S, A, C, _, _, _, _, _, _, _).
loc(placeid(P), stateid(S)) :- highlow(S, _, P, _, _, _).
loc(placeid(P), stateid(S)) :- highlow(S, _, _, _, P, _).
loc(mountainid(M), stateid(S)) :- mountain(S, _, M, _).
loc(riverid(R), stateid(S)) :- river(R, _, States), member(S, States).
loc(lakeid(L), stateid(S)) :- lake(L, _, States), member(S, States).

traverse(riverid(R), stateid(S)) :- river(R, _, States), member(S, States).
traverse(riverid(_), countryid(usa)).

next_to(stateid(X), stateid(Y)) :- border(X, _, Neighbours), member(Y, Neighbours).

high_point(countryid(usa), placeid('mount mckinley')).
high_point(stateid(S), placeid(P)) :- highlow(S, _, P, _, _, _).
low_point(countryid(usa), placeid('death valley')).
low_point(stateid(S), placeid(P)) :- highlow(S, _, _, _, P, _).

% ---- measures ---------------------------------------------------------------------------------
area(stateid(S), A) :- state(S, _, _, _, A0, _, _, _, _, _), A is float(A0).
area(countryid(C), A) :- country(C, _, A0), A is float(A0).

population(countryid(C), P) :- country(C, P, _).
population(stateid(S), P) :- state(S, _, _, P, _, _, _, _, _, _).
population(cityid(C, A), P) :- city(_, A, C, P).

len(riverid(R), L) :- river(R, L, _).

elevation(placeid(P), E) :- highlow(_, _, _, _, P, E).
elevation(placeid(P), E) :- highlow(_, _, P, E, _, _).
elevation(mountainid(M), E) :- mountain(_, _, M, E).

size(stateid(S), X) :- area(stateid(S), X).
size(cityid(C, A), X) :- population(cityid(C, A), X).
size(riverid(R), X) :- len(riverid(R), X).
size(placeid(P), X) :- elevation(placeid(P), X).
size(X, X) :- number(X).

density(X, D) :- population(X, P), area(X, A), D is P / A.

major(cityid(C, A)) :- city(cityid(C, A)), population(cityid(C, A), P), P > 150000.
major(riverid(R)) :- river(riverid(R)), len(riverid(R), L), L > 750.

const(X, X).

higher(X, Y) :- elevation(X, EX), elevation(Y, EY), EX > EY.
lower(X, Y) :- elevation(X, EX), elevation(Y, EY), EX < EY.
longer(X, Y) :- len(X, LX), len(Y, LY), LX > LY.
shorter(X, Y) :- len(X, LX), len(Y, LY), LX < LY.
more(X, Y) :- X > Y.

divide(X, Y, X/Y).
multiply(X, Y, X*Y).
add(X, Y, X+Y).
subtract(X, Y, X-Y).

% ---- aggregates -------------------------------------------------------------------------------
count(V, Goal, N) :- findall(V, Goal, Vs), sort(Vs, Distinct), length(Distinct, N).

sum(V, Goal, Total) :- findall(V, Goal, Vs), foldl([X, S0, S]>>(S is S0 + X), Vs, 0, Total).

%  max_value(+Pairs, -Winner), min_value(+Pairs, -Winner): the value of the first Key-Value pair
%  whose key no later key beats strictly; both fail on no pairs.
max_value([Key-Value|Rest], Winner) :- max_value(Rest, Key, Value, Winner).
max_value([], _, Winner, Winner).
max_value([K-V|Rest], Key, Value, Winner) :-
    (   K > Key -> max_value(Rest, K, V, Winner) ; max_value(Rest, Key, Value, Winner) ).

min_value([Key-Value|Rest], Winner) :- min_value(Rest, Key, Value, Winner).
min_value([], _, Winner, Winner).
min_value([K-V|Rest], Key, Value, Winner) :-
    (   K < Key -> min_value(Rest, K, V, Winner) ; min_value(Rest, Key, Value, Winner) ).

largest(V, Goal) :- findall(Size-Goal, (Goal, size(V, Size)), Pairs), max_value(Pairs, Goal).
smallest(V, Goal) :- findall(Size-Goal, (Goal, size(V, Size)), Pairs), min_value(Pairs, Goal).
highest(X, Goal) :- largest(Y, (Goal, elevation(X, Y))).
lowest(X, Goal) :- smallest(Y, (Goal, elevation(X, Y))).
longest(X, Goal) :- largest(Y, (Goal, len(X, Y))).
shortest(X, Goal) :- smallest(Y, (Goal, len(X, Y))).

%  most(I, V, Goal): the I with the most distinct Vs among Goal's solutions (setof: one answer
%  per binding of Goal's other variables); fewest/3 the fewest.
most(I, V, Goal) :- setof(I-V, Goal, Solutions), keysort(Solutions, Sorted), runs(Sorted, Runs),
    best_run(>, Runs, 0, I).
fewest(I, V, Goal) :- setof(I-V, Goal, Solutions), keysort(Solutions, Sorted), runs(Sorted, Runs),
    best_run(<, Runs, 1000, I).

runs([], []).
runs([I-_|Rest], [I-N|Runs]) :- run_length(Rest, I, 1, N, After), runs(After, Runs).
run_length([J-_|Rest], I, N0, N, After) :- J = I, !, N1 is N0 + 1, run_length(Rest, I, N1, N, After).
run_length(Rest, _, N, N, Rest).

best_run(Better, Runs, Start, I) :- best_run(Better, Runs, foo, Start, I).
best_run(_, [], I, _, I).
best_run(Better, [J-N|Runs], I0, N0, I) :-
    (   call(Better, N, N0) -> best_run(Better, Runs, J, N, I) ; best_run(Better, Runs, I0, N0, I) ).

% ---- queries ----------------------------------------------------------------------------------
%  prepare(+Query, -Prepared): the superlatives and most/fewest become independent subqueries.
prepare(Q, Q) :- var(Q), !.
prepare(Q, independent(Vars, Copies, Sub)) :-
    independent_form(Q, Vars, Copies, Sub), !.
prepare(Q, P) :-
    compound(Q), !,
    compound_name_arguments(Q, Name, Args),
    maplist(prepare, Args, Prepared),
    compound_name_arguments(P, Name, Prepared).
prepare(Q, Q).

independent_form(Q, Vars, Copies, Sub) :-
    Q =.. [Name|Args],
    memberchk(Name/Arity, [largest/2, smallest/2, highest/2, most/3, fewest/3]),
    length(Args, Arity),
    last(Args, Goal),
    term_variables(Goal, Vars),
    copy_term(Vars-Args, Copies-CopiedArgs),
    append(Front, [CopiedGoal], CopiedArgs),
    prepare(CopiedGoal, PreparedGoal),
    append(Front, [PreparedGoal], SubArgs),
    Sub =.. [Name|SubArgs].

independent(Vars, Copies, Sub) :- call(Sub), !, Vars = Copies.

%  print_name(+Entity, -Name): what an answer shows of an entity.
print_name(stateid(X), X) :- !.
print_name(cityid(X, _), X) :- !.
print_name(riverid(X), X) :- !.
print_name(placeid(X), X) :- !.
print_name(countryid(X), X) :- !.
print_name(mountainid(X), X) :- !.
print_name(lakeid(X), X) :- !.
print_name(Term, Value) :- (Term = _/_ ; Term = _*_ ; Term = _+_ ; Term = _-_), !, Value is Term.
print_name(X, X).

%  denotation(+Query, -Names): the sorted set of the answer variable's printed names; fails when
%  Query is not answer(Var, Goal).
denotation(Query, Names) :-
    prepare(Query, Prepared),
    Prepared = answer(Var, Goal),
    findall(Name, (Goal, print_name(Var, Name)), All),
    sort(All, Names).
